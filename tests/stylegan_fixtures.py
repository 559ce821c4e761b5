"""The StyleGAN2 test fixtures (tiny seeded networks, NVlabs-style pickles, rosinality checkpoints)."""
from tlgan.models.formats.fixtures import (TINY, nvlabs_kwargs, tiny_stylegan2, write_nvlabs_pickle,  # noqa: F401
                                           write_rosinality)
