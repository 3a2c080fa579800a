import struct

import pytest

from simclrv2.metrics import MetricsWriter, read_metrics
from simclrv2.tfio.crc32c import crc32c, mask
from simclrv2.tfio.protowire import parse


def _records(path):
    """Read TFRecord frames independently of the writer, checking both CRCs."""
    data, pos, records = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        (length_crc,) = struct.unpack_from("<I", data, pos + 8)
        assert length_crc == mask(crc32c(data[pos : pos + 8]))
        record = data[pos + 12 : pos + 12 + length]
        (record_crc,) = struct.unpack_from("<I", data, pos + 12 + length)
        assert record_crc == mask(crc32c(record))
        records.append(record)
        pos += 16 + length
    return records


def test_csv_and_tensorboard_events_hold_the_same_scalars(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.csv", "pretrain")
    writer.write(10, 0.5, {"loss": 4.25, "lr": 0.125})
    writer.write(20, 1.0, {"loss": 3.5})
    writer.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert {(r["step"], r["name"], r["value"]) for r in rows} == {
        (10, "loss", 4.25),
        (10, "lr", 0.125),
        (20, "loss", 3.5),
    }

    (events,) = tmp_path.glob("events.out.tfevents.*")
    records = [parse(r) for r in _records(events)]
    assert records[0][3] == [b"brain.Event:2"]
    scalars = []
    for event in records[1:]:
        for value in parse(event[5][0])[1]:
            fields = parse(value)
            (bits,) = fields[2]
            scalars.append(
                (
                    event[2][0],
                    fields[1][0].decode(),
                    struct.unpack("<f", bits.to_bytes(4, "little"))[0],
                )
            )
    assert scalars == [
        (10, "pretrain/loss", 4.25),
        (10, "pretrain/lr", 0.125),
        (20, "pretrain/loss", 3.5),
    ]


def test_resumed_writer_appends_and_the_later_row_wins(tmp_path):
    first = MetricsWriter(tmp_path / "metrics.csv", "finetune")
    first.write(5, 1.0, {"loss": 2.0})
    first.close()
    second = MetricsWriter(tmp_path / "metrics.csv", "finetune")
    second.write(5, 1.0, {"loss": 1.5})
    second.close()
    assert [(r["step"], r["value"]) for r in read_metrics(tmp_path / "metrics.csv")] == [(5, 1.5)]
    assert (tmp_path / "metrics.csv").read_text().count("stage,epoch") == 1


def test_tensorboard_reads_the_events_when_installed(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    writer = MetricsWriter(tmp_path / "metrics.csv", "distill")
    writer.write(3, 0.1, {"loss": 0.75})
    writer.close()
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("distill/loss")] == [(3, 0.75)]
