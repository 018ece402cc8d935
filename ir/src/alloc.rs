//! Fallible allocation: memory for tensors and buffers is asked for with
//! `try_reserve_exact`, so running out is an [`OutOfMemory`] error instead of an abort.
//!
//! Sizes come from users (shapes, data sets), and a shape within
//! [`crate::types::MAX_ELEMENTS`] can still need more memory than the machine has.

use thiserror::Error;

/// Memory for a tensor or buffer could not be had: the environment's limit (RAM,
/// `ulimit -v`, overcommit policy) for a model that needs this much, not a kiln bug.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("out of memory: cannot allocate {bytes} bytes for {what}")]
pub struct OutOfMemory {
    /// What the memory was for (`parameter "w"`, `the value of %3 (matmul)`, ...).
    pub what: String,
    /// How many bytes were asked for (saturated at `usize::MAX`).
    pub bytes: usize,
}

/// An empty vector with room for exactly `len` elements, or an error naming `what`.
pub fn try_with_capacity<T>(
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, OutOfMemory> {
    let mut items = Vec::new();
    items.try_reserve_exact(len).map_err(|_| OutOfMemory {
        what: what(),
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(items)
}

/// `vec![value; len]`, or an error naming `what` if the memory cannot be had.
pub fn try_vec<T: Clone>(
    value: T,
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, OutOfMemory> {
    let mut items = try_with_capacity(len, what)?;
    items.resize(len, value);
    Ok(items)
}

/// Collects an iterator that knows its length (`ExactSizeIterator`) into a vector
/// allocated up front, or an error naming `what`.
pub fn try_collect<T>(
    items: impl ExactSizeIterator<Item = T>,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, OutOfMemory> {
    let mut collected = try_with_capacity(items.len(), what)?;
    collected.extend(items);
    Ok(collected)
}

/// A copy of `items`, or an error naming `what`.
pub fn try_clone<T: Clone>(
    items: &[T],
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, OutOfMemory> {
    let mut copy = try_with_capacity(items.len(), what)?;
    copy.extend_from_slice(items);
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_request_is_an_error_naming_what_and_how_much() {
        // More bytes than any address space has: `try_reserve_exact` refuses it
        // whatever the machine.
        let len = usize::MAX / 8;
        let err = try_vec(0.0f64, len, || "parameter \"w\"".to_string()).unwrap_err();
        assert_eq!(
            err,
            OutOfMemory {
                what: "parameter \"w\"".to_string(),
                bytes: len * 8,
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "out of memory: cannot allocate {} bytes for parameter \"w\"",
                len * 8
            )
        );
    }

    #[test]
    fn helpers_give_the_values_of_their_infallible_counterparts() {
        assert_eq!(try_vec(7u32, 3, String::new).unwrap(), vec![7, 7, 7]);
        assert_eq!(try_vec(7u32, 0, String::new).unwrap(), Vec::<u32>::new());
        let doubled = try_collect([1, 2, 3].iter().map(|x| x * 2), String::new).unwrap();
        assert_eq!(doubled, vec![2, 4, 6]);
        assert_eq!(doubled.capacity(), 3);
        assert_eq!(try_clone(&[1, 2], String::new).unwrap(), vec![1, 2]);
    }
}
