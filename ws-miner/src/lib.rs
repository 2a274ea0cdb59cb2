//! Placeholder until the miner lands.
