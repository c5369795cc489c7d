"""Export: AIMET-compatible ``.encodings`` files (and, with the quantsim, float and QDQ models)."""

from onnxq.export.encodings_file import (
    SUPPORTED_VERSIONS,
    EncodingSet,
    encodings_from_dict,
    encodings_to_dict,
    load_encodings,
    save_encodings,
)

__all__ = [
    "SUPPORTED_VERSIONS",
    "EncodingSet",
    "encodings_from_dict",
    "encodings_to_dict",
    "load_encodings",
    "save_encodings",
]
