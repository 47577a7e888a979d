//! The socket transport's write buffer: what the kernel did not take yet.

/// A buffered chunk is released (not just cleared) above this capacity, so
/// an idle connection does not keep a large buffer.
const KEEP_CAPACITY: usize = 4096;

/// Bytes `[head..]` of `data` are still to send: one contiguous `Vec` with
/// a consumed-prefix offset, empty (no allocation) while nothing waits.
#[derive(Default)]
pub(super) struct WriteBuf {
    data: Vec<u8>,
    head: usize,
}

impl WriteBuf {
    pub(super) fn len(&self) -> usize {
        self.data.len() - self.head
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head == self.data.len()
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.data[self.head..]
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        // Compact before growing when more than half is already sent.
        if self.head > 0 && self.head >= self.data.len() / 2 {
            self.data.drain(..self.head);
            self.head = 0;
        }
        // A write at least as large as what is buffered gets exactly its
        // room: no doubling past a huge payload (M07).
        if bytes.len() > self.data.capacity() - self.data.len() && bytes.len() >= self.data.len() {
            self.data.reserve_exact(bytes.len());
        }
        self.data.extend_from_slice(bytes);
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.head += n;
        if self.is_empty() {
            self.clear();
        }
    }

    pub(super) fn clear(&mut self) {
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
        self.head = 0;
    }
}
