"""The brainhead model zoo: cross-subject encoders and decoders in PyTorch.

One module per family, sharing one constructor signature: voxel cross-attention
encoders, inter-cortical electrode multi-head attention, subject adapters with a shared
decoder, and multi-head memory RNNs with learnable timescales. This package imports
torch and einops only, never ``brainhead``. The families arrive with their own issues.
"""
