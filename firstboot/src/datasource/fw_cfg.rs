//! QEMU's fw_cfg: `kiln boot --node FILE` passes the config as
//! `-fw_cfg name=opt/io.kiln/node.yaml,file=FILE`; the kernel's
//! `qemu_fw_cfg` module shows it under `/sys/firmware/qemu_fw_cfg/by_name/`.

use std::path::Path;

use super::{read_file, under, Datasource, FetchError};
use crate::layout::FW_CFG_NODE_CONFIG;

const BY_NAME: &str = "/sys/firmware/qemu_fw_cfg/by_name";

/// The node config QEMU passed through fw_cfg.
pub struct FwCfg;

impl Datasource for FwCfg {
    fn name(&self) -> &str {
        "fw_cfg opt/io.kiln/node.yaml"
    }

    fn fetch(&self, root: &Path) -> Result<Option<Vec<u8>>, FetchError> {
        let path = format!("{BY_NAME}/{FW_CFG_NODE_CONFIG}/raw");
        read_file(&under(root, &path), &path)
    }
}
