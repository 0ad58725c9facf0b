//! How a verb ensures an agent's unit: what it does with one that already runs. A leaf,
//! so the unit driver, a system agent's switch and the side units all name it without
//! importing each other.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Keep a running unit if its plan hash matches, replace it otherwise.
    Create,
    /// Keep whatever runs.
    Start,
    /// Always replace what runs.
    Rebuild,
}
