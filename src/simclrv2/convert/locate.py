"""Finding a TensorFlow checkpoint on disk: the prefix that a user's path names."""

from __future__ import annotations

import re
from pathlib import Path

from simclrv2.errors import UserError

_STATE_PATH = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)


def find_prefix(source: str | Path) -> Path:
    """The checkpoint prefix that ``source`` names: a prefix, an ``.index`` or shard file, a folder
    with TF's ``checkpoint`` state file, a SavedModel folder (its ``variables/variables``), or a
    folder holding exactly one ``*.index``."""
    source = Path(source)
    name = re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", source.name)
    if source.with_name(name + ".index").is_file():
        return source.with_name(name)
    if not source.is_dir():
        raise UserError(
            f"{source} does not exist; pass a checkpoint folder, a model.ckpt-N prefix or a "
            "saved_model folder"
        )
    state = source / "checkpoint"
    if state.is_file():
        match = _STATE_PATH.search(state.read_text(errors="replace"))
        if not match:
            raise UserError(f"{state} names no model_checkpoint_path; it is not TF's state file")
        prefix = source / Path(match[1]).name  # the state file often holds the writer's full path
        if not prefix.with_name(prefix.name + ".index").is_file():
            raise UserError(f"{state} names {match[1]!r}, but {prefix}.index does not exist")
        return prefix
    if (source / "variables" / "variables.index").is_file():
        return source / "variables" / "variables"
    indexes = sorted(source.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0].with_suffix("")
    found = f"{len(indexes)} .index files" if indexes else "no checkpoint file, no .index file"
    raise UserError(
        f"{source} holds {found} and no saved_model variables/; pass the folder of one checkpoint "
        "or its model.ckpt-N prefix"
    )
