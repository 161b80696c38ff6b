//! [`Inflights`]: the sliding window of append messages sent to one follower and
//! not yet acknowledged, bounding optimistic replication (flow control).

/// A bounded FIFO of the last indexes of in-flight append messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflights {
    /// Ring buffer of last indexes, oldest at `start`.
    buffer: Vec<u64>,
    start: usize,
    count: usize,
    cap: usize,
}

impl Inflights {
    /// A window of at most `cap` messages.
    pub fn new(cap: usize) -> Inflights {
        Inflights {
            buffer: Vec::with_capacity(cap.min(64)),
            start: 0,
            count: 0,
            cap,
        }
    }

    /// Whether no more messages may be sent.
    pub fn full(&self) -> bool {
        self.count == self.cap
    }

    /// The number of in-flight messages.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The window size.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Records a message whose last entry is `inflight`.
    ///
    /// # Panics
    /// When the window is full or `inflight` is not increasing.
    pub(crate) fn add(&mut self, inflight: u64) {
        assert!(!self.full(), "cannot add into a full inflights window");
        if self.count > 0 {
            let last = self.buffer[(self.start + self.count - 1) % self.cap];
            assert!(inflight > last, "inflight {inflight} added after {last}");
        }
        let next = (self.start + self.count) % self.cap;
        if next < self.buffer.len() {
            self.buffer[next] = inflight;
        } else {
            // The buffer grows lazily up to `cap`; `next` is then always its end.
            self.buffer.push(inflight);
        }
        self.count += 1;
    }

    /// Frees every message whose last index is `<= to`.
    pub(crate) fn free_to(&mut self, to: u64) {
        while self.count > 0 && self.buffer[self.start] <= to {
            self.start = (self.start + 1) % self.cap;
            self.count -= 1;
        }
        if self.count == 0 {
            self.start = 0;
        }
    }

    /// Frees the oldest message (a heartbeat response shows the follower is alive).
    pub(crate) fn free_first_one(&mut self) {
        if self.count > 0 {
            let first = self.buffer[self.start];
            self.free_to(first);
        }
    }

    /// Empties the window.
    pub(crate) fn reset(&mut self) {
        self.count = 0;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(i: &Inflights) -> Vec<u64> {
        (0..i.count)
            .map(|k| i.buffer[(i.start + k) % i.cap])
            .collect()
    }

    #[test]
    fn inflights_add_wraps_around_2ab() {
        let mut ins = Inflights::new(10);
        for i in 0..5 {
            ins.add(i);
        }
        assert_eq!(contents(&ins), vec![0, 1, 2, 3, 4]);
        ins.free_to(2);
        assert_eq!(contents(&ins), vec![3, 4]);
        for i in 5..13 {
            ins.add(i);
        }
        assert!(ins.full());
        assert_eq!(contents(&ins), (3..13).collect::<Vec<_>>());
        assert_eq!(ins.start, 3);
    }

    #[test]
    fn inflights_free_to_2ab() {
        let mut ins = Inflights::new(10);
        for i in 0..10 {
            ins.add(i);
        }
        ins.free_to(0);
        assert_eq!(ins.count(), 9);
        ins.free_to(4);
        assert_eq!(contents(&ins), vec![5, 6, 7, 8, 9]);
        ins.free_to(8);
        assert_eq!(contents(&ins), vec![9]);
        for i in 10..15 {
            ins.add(i);
        }
        ins.free_to(12);
        assert_eq!(contents(&ins), vec![13, 14]);
        ins.free_to(14);
        assert_eq!(ins.count(), 0);
        assert_eq!(ins.start, 0);
    }

    #[test]
    fn inflights_free_first_one_2ab() {
        let mut ins = Inflights::new(10);
        for i in 0..10 {
            ins.add(i);
        }
        ins.free_first_one();
        assert_eq!(contents(&ins), (1..10).collect::<Vec<_>>());
        ins.reset();
        assert_eq!(ins.count(), 0);
        ins.free_first_one();
        assert_eq!(ins.count(), 0);
    }

    #[test]
    #[should_panic(expected = "full inflights")]
    fn inflights_add_to_full_panics_2ab() {
        let mut ins = Inflights::new(2);
        ins.add(1);
        ins.add(2);
        ins.add(3);
    }
}
