//! The async/await side: futures that ride on the loop.

pub mod datagram;
pub mod rt;
pub mod stream;
mod streams;
pub mod time;
