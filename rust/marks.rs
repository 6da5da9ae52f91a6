//! Visit marks that start over in constant time.
//!
//! Subset constructions (the lexer's, [`crate::regex`], and JSON Schema's
//! character automata) take thousands of epsilon closures over the same
//! NFA. A fresh `Vec<bool>` per closure costs the NFA's size each time; a
//! mark that counts as set only while it equals the current stamp is
//! cleared by bumping the stamp.

/// A set of indices `0..n` with constant-time [`Marks::reset`].
#[derive(Debug, Clone, Default)]
pub struct Marks {
    marks: Vec<u32>,
    stamp: u32,
}

impl Marks {
    /// Forget every mark, and make room for indices below `n`.
    pub fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Wrapped: old stamps could read as current.
            self.marks.fill(0);
            self.stamp = 1;
        }
    }

    /// Mark `i`; `true` iff it was not marked since the last reset.
    #[inline]
    pub fn insert(&mut self, i: usize) -> bool {
        let m = &mut self.marks[i];
        if *m == self.stamp {
            return false;
        }
        *m = self.stamp;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Marks;

    #[test]
    fn reset_forgets_and_wrapping_stays_exact() {
        let mut m = Marks::default();
        m.reset(4);
        assert!(m.insert(2) && !m.insert(2) && m.insert(3));
        m.reset(4);
        assert!(m.insert(2));
        // Run the stamp round to zero: a mark from 2^32 resets ago must not
        // read as set.
        m.stamp = u32::MAX;
        m.marks[1] = 1;
        m.reset(6);
        assert!(m.insert(1) && m.insert(5) && !m.insert(5));
    }
}
