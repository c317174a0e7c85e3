//! Names shared by the builder (which writes them) and the image (which looks
//! for them). Changing one breaks every image already flashed: don't.

/// GPT partition names (also used as filesystem labels where a filesystem
/// has one).
pub const ESP_PARTITION: &str = "kiln-esp";
pub const ROOT_A_PARTITION: &str = "kiln-root-a";
pub const ROOT_B_PARTITION: &str = "kiln-root-b";
pub const DATA_PARTITION: &str = "kiln-data";

/// Installer stick (`kiln build --installer`): its FAT boot partition, the
/// partition holding the raw image, and the image's map on the former.
pub const INSTALLER_PARTITION: &str = "kiln-installer";
pub const PAYLOAD_PARTITION: &str = "kiln-payload";
pub const PAYLOAD_MAP: &str = "kiln/payload.map";
/// The installer's FAT label: not a kiln boot partition's, so a node
/// never reads its node.yaml as its own.
pub const INSTALLER_LABEL: &str = "KILN-INST";
/// On an MBR disk (no partition names), the partitions in number order:
/// partition 1 is the boot partition, 4 the data partition. `kiln-init`
/// gives them these names on the disk whose signature `kiln.mbr=` names.
pub const MBR_PARTITIONS: [&str; 4] = [
    ESP_PARTITION,
    ROOT_A_PARTITION,
    ROOT_B_PARTITION,
    DATA_PARTITION,
];

/// Initramfs: the ordered list of modules `kiln-init` loads, one path per
/// line, relative to the initramfs root.
pub const INITRAMFS_MODULE_LIST: &str = "etc/kiln/modules.load";

/// Root image: node config baked in at build time.
pub const BAKED_NODE_CONFIG: &str = "/usr/lib/kiln/node.yaml";
/// Root image: air-gap image tarballs (spec `airgap-images`); kiln-firstboot
/// links each into k3s's `agent/images` directory.
pub const AIRGAP_IMAGES_DIR: &str = "/usr/lib/kiln/airgap-images";
/// Data partition: the node config the first boot found, kept for later boots.
pub const PERSISTED_NODE_CONFIG: &str = "/var/lib/kiln/node.yaml";
/// Data partition: present once the first boot finished its work.
pub const FIRSTBOOT_DONE: &str = "/var/lib/kiln/firstboot.done";
/// Data partition: the persistent upper layer of the `/etc` overlay.
pub const ETC_OVERLAY_UPPER: &str = "/var/lib/kiln/etc-overlay/upper";
pub const ETC_OVERLAY_WORK: &str = "/var/lib/kiln/etc-overlay/work";
/// QEMU fw_cfg key the node config is passed under (`kiln boot --node`).
pub const FW_CFG_NODE_CONFIG: &str = "opt/io.kiln/node.yaml";
