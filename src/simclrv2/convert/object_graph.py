"""TF2's object graph: the Keras name of each variable of a TF2 checkpoint or SavedModel, whose
keys are object paths (TrackableObjectGraph, stored as a string tensor beside the variables)."""

from __future__ import annotations

from simclrv2.convert.tensorbundle import OBJECT_GRAPH_KEY, TensorBundle
from simclrv2.errors import UserError
from simclrv2.tfio import protowire


def object_graph_names(bundle: TensorBundle) -> dict[str, str]:
    """Checkpoint key -> the variable's ``full_name`` (Keras name), from a TF2 checkpoint's
    TrackableObjectGraph (nodes: field 1; a node's SerializedTensor attributes: field 2, holding
    full_name in field 2 and checkpoint_key in field 3). Empty for a TF1 checkpoint."""
    if OBJECT_GRAPH_KEY not in bundle:
        return {}
    names = {}
    try:
        for node in protowire.parse(bundle.read(OBJECT_GRAPH_KEY).item()).get(1, []):
            for attribute in protowire.parse(node).get(2, []):
                fields = protowire.parse(attribute)
                key, full_name = (fields.get(n, [b""])[0].decode() for n in (3, 2))
                if key and full_name:
                    names[key] = full_name
    except (protowire.WireError, UnicodeDecodeError, AttributeError):
        raise UserError(f"{bundle.index_path}: the TF2 object graph is malformed") from None
    return names
