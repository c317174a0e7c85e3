//! GPT (being written).
