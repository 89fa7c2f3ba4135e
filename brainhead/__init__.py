"""brainhead: connect brains and models.

A Snakemake pipeline and its library: preprocess EEG, sEEG and fMRI into one uniform
response table per subject, extract transformer activations layer by layer, and score
how each layer aligns with the brain against a random-weights control.
"""

__version__ = "0.1.0"
