"""Readers of recordings and the HDF5 artifact store.

The response table (:class:`ResponseTable`) is the one type every preprocessing step
returns; :func:`write_responses` and :func:`read_responses` move it to and from disk.
"""

from .readers import (
    RAW_READERS,
    RecordingError,
    read_bids_raw,
    read_bold,
    read_events_tsv,
    read_mat,
    read_raw,
    stimulus_table,
)
from .store import (
    atomic_path,
    provenance,
    read_arrays,
    read_attrs,
    read_responses,
    spec_hash,
    write_arrays,
    write_responses,
)
from .table import (
    VIEW_AXES,
    ResponseTable,
    ResponseTableError,
    Targets,
    View,
)

__all__ = [
    "RAW_READERS", "RecordingError", "read_bids_raw", "read_bold", "read_events_tsv",
    "read_mat", "read_raw", "stimulus_table", "atomic_path", "provenance", "read_arrays",
    "read_attrs", "read_responses", "spec_hash", "write_arrays", "write_responses",
    "VIEW_AXES", "ResponseTable", "ResponseTableError", "Targets", "View",
]
