"""Reading the authors' TensorFlow checkpoints without TensorFlow, and converting them."""
