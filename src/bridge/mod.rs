//! The async/await side: futures that ride on the loop.

pub mod time;
