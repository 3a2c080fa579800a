"""TensorFlow's wire formats in plain Python and numpy: CRC-32C, the protocol-buffer wire format and
TFRecord framing. The ground floor under the TensorBoard writer and the checkpoint converter."""
