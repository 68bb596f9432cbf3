//! The datasets as Burn's data loaders take them.

use burn::data::dataset::{Dataset, DatasetError};

use crate::{DataError, ImageItem};

/// A dataset of this crate (its errors are [`DataError`]) seen with Burn's default error type,
/// as `DataLoaderBuilder::build` requires: `builder.build(ForLoader(set))`.
#[derive(Debug, Clone)]
pub struct ForLoader<D>(pub D);

impl<D: Dataset<ImageItem, DataError>> Dataset<ImageItem> for ForLoader<D> {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        self.0.get(index).map_err(DatasetError::new)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}
