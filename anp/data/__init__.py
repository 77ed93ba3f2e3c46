"""Data: the arrays of a data set from the official archives or TFDS, and the tf.data
pipelines with the paper's preprocessing and augmentation (`pipeline`, whose API is
re-exported here); finding and parsing the raw archives (`raw_files`)."""

from anp.data.pipeline import (DatasetInfo, dataset_info, eval_images, load_arrays,
                               make_dataset, random_pad_crop_flip, standardize_per_image,
                               training_batches)
from anp.errors import DataError

__all__ = ["DataError", "DatasetInfo", "dataset_info", "eval_images", "load_arrays",
           "make_dataset", "random_pad_crop_flip", "standardize_per_image", "training_batches"]
