"""The StyleGAN2 test fixtures (tiny seeded networks, NVlabs-style pickles, rosinality checkpoints)."""

from tlgan.models.formats.fixtures import (  # noqa: F401
    TINY,
    nvlabs_kwargs,
    tiny_stylegan2,
    write_nvlabs_pickle,
    write_rosinality,
)
