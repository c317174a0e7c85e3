//! The config the builder baked into the root image (`node:` in the spec).

use std::path::Path;

use super::{read_file, under, Datasource, FetchError};
use crate::layout::BAKED_NODE_CONFIG;

/// The node config baked into the image at build time.
pub struct Baked;

impl Datasource for Baked {
    fn name(&self) -> &str {
        BAKED_NODE_CONFIG
    }

    fn fetch(&self, root: &Path) -> Result<Option<Vec<u8>>, FetchError> {
        read_file(&under(root, BAKED_NODE_CONFIG), BAKED_NODE_CONFIG)
    }
}
