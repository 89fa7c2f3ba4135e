"""The alignment report: one self-contained HTML file built on :class:`mne.Report`.

Sections (a table of contents, tags to filter by) come from functions registered with
:func:`register_section` and run in order by :func:`make_report`:

- overview: what the metrics mean, and per modality the median r at the best layer,
  wins over the random-weights control and (simulated studies) recovered planted layers;
- best layers: per subject and region, the layer chosen on training folds only, the
  intermediate-layer advantage, the trained-minus-random test, noise-ceiled scores;
- cross-modal: one layer curve per modality on relative depth, trained versus random;
- brain maps: glass brains and stat maps (fMRI), topomaps (EEG), contacts (sEEG);
- layer curves: every metric per subject and region;
- one section per trained model family (:mod:`brainhead.report.encoders`);
- provenance: spec hash, versions, git revision, seeds, settings, run time and memory.

Every figure is also written as PNG and SVG under ``results/<study>/figures/``.
"""

from . import decoders, decoding, encoders  # noqa: F401  (register the model families' sections)
from . import memory  # noqa: F401  (registers the memory_rnn decoder's section)
from .build import external_resources, make_report
from .encoders import encoder_sections
from .sections import ReportBuilder, ReportContext, register_section, registered_sections
from .tables import best_layers, recovery_table

__all__ = [
           "ReportBuilder",
           "ReportContext",
           "best_layers",
           "encoder_sections",
           "external_resources",
           "make_report",
           "recovery_table",
           "register_section",
           "registered_sections",
]
