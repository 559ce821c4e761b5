"""Image data for training: CelebA-layout folders, plain image folders, shuffled batches."""

from tlgan.data.celeba import CelebAFolder, parse_attribute_file, parse_partition_file
from tlgan.data.images import BatchSampler, ImageFolder, decode_image, to_float_images

__all__ = [
    "CelebAFolder",
    "ImageFolder",
    "BatchSampler",
    "decode_image",
    "to_float_images",
    "parse_attribute_file",
    "parse_partition_file",
]
