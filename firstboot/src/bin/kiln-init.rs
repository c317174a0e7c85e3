//! `/init` of the kiln initramfs: see [`kiln_node::init`].

fn main() {
    kiln_node::init::main()
}
