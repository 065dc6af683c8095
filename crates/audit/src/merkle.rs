//! RFC 6962 §2.1 (= RFC 9162 §2.1) Merkle tree over SHA-256.
//!
//! * leaf data: the event's 32-byte chain `hash`;
//! * leaf hash: `SHA-256(0x00 || data)`;
//! * interior node: `SHA-256(0x01 || left || right)`;
//! * the tree of `n > 1` leaves is `node(MTH(D[0..k]), MTH(D[k..n]))` with `k` the largest power
//!   of two strictly below `n`; the root of the empty tree is `SHA-256("")`.
//!
//! Proofs are lists of 32-byte node hashes, bottom-up, exactly as in the RFC, so any RFC 6962
//! verifier accepts them (the tests cross-check against the `ct-merkle` crate).
//!
//! Proofs are built from the hashes of complete subtrees ([`Subtrees`]): from a slice of all
//! leaves (O(n) SHA-256, about 0.3 s for a million events), or from a [`MerkleIndex`](crate::
//! MerkleIndex) that keeps the larger subtrees as the log grows (O(log n), two blocks of leaves
//! read at most). Verification is O(log n).

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// Root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below the tree size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    #[error("tree size {tree_size} is larger than the {available} leaves available")]
    SizeOutOfRange { tree_size: u64, available: u64 },
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldLarger { old_size: u64, new_size: u64 },
    #[error("the subtree of level {level} at index {index} is not available")]
    Unavailable { level: u32, index: u64 },
    #[error("the proof does not lead to the given root (wrong proof, leaf, index, size or root)")]
    Mismatch,
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH over leaf data.
pub(crate) fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => leaf_hash(&d[0]),
        n => {
            let k = split(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// Merkle tree hash of `leaves` (each the leaf *data*, i.e. an event hash).
pub fn root(leaves: &[Hash]) -> Hash {
    MerkleAccumulator::from_leaves(leaves).root()
}

fn check_size(tree_size: u64, available: usize) -> Result<usize, ProofError> {
    if tree_size > available as u64 {
        return Err(ProofError::SizeOutOfRange {
            tree_size,
            available: available as u64,
        });
    }
    Ok(tree_size as usize)
}

/// Where a proof's nodes come from: the hash of any complete, aligned subtree, i.e. the MTH of
/// leaves `index << level .. (index + 1) << level`. Proofs ask only for subtrees inside the tree
/// they prove; a source that cannot give one answers [`ProofError::Unavailable`].
pub trait Subtrees {
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError>;
}

/// Every subtree computed from the leaf data in a slice.
struct Slice<'a>(&'a [Hash]);

impl Subtrees for Slice<'_> {
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let start = (index << level) as usize;
        let end = start + (1usize << level);
        self.0
            .get(start..end)
            .map(mth)
            .ok_or(ProofError::Unavailable { level, index })
    }
}

/// MTH of leaves `a..b`, from the complete subtrees it decomposes into.
pub fn range_hash<S: Subtrees + ?Sized>(s: &S, a: u64, b: u64) -> Result<Hash, ProofError> {
    let n = b - a;
    if n == 0 {
        return Ok(EMPTY_ROOT);
    }
    if n.is_power_of_two() && a.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return s.subtree(level, a >> level);
    }
    let k = split(n as usize) as u64;
    Ok(node_hash(
        &range_hash(s, a, a + k)?,
        &range_hash(s, a + k, b)?,
    ))
}

/// Audit path (RFC 6962 `PATH(m, D[n])`) of leaf `index` in the tree of the first `tree_size`
/// leaves.
pub fn inclusion_proof(
    leaves: &[Hash],
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    check_size(tree_size, leaves.len())?;
    inclusion_proof_in(&Slice(leaves), index, tree_size)
}

/// [`inclusion_proof`] with its nodes from `s`: O(log n) subtrees.
pub fn inclusion_proof_in<S: Subtrees + ?Sized>(
    s: &S,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    fn path<S: Subtrees + ?Sized>(
        s: &S,
        m: u64,
        off: u64,
        len: u64,
        out: &mut Vec<Hash>,
    ) -> Result<(), ProofError> {
        if len <= 1 {
            return Ok(());
        }
        let k = split(len as usize) as u64;
        if m < k {
            path(s, m, off, k, out)?;
            out.push(range_hash(s, off + k, off + len)?);
        } else {
            path(s, m - k, off + k, len - k, out)?;
            out.push(range_hash(s, off, off + k)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    path(s, index, 0, tree_size, &mut out)?;
    Ok(out)
}

/// Consistency proof (RFC 6962 `PROOF(m, D[n])`) that the tree of the first `old_size` leaves is
/// a prefix of the tree of the first `new_size`. Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof(
    leaves: &[Hash],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    check_size(new_size, leaves.len())?;
    consistency_proof_in(&Slice(leaves), old_size, new_size)
}

/// [`consistency_proof`] with its nodes from `s`: O(log n) subtrees.
pub fn consistency_proof_in<S: Subtrees + ?Sized>(
    s: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldLarger { old_size, new_size });
    }
    fn subproof<S: Subtrees + ?Sized>(
        s: &S,
        m: u64,
        off: u64,
        len: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), ProofError> {
        if m == len {
            if !complete {
                out.push(range_hash(s, off, off + len)?);
            }
            return Ok(());
        }
        let k = split(len as usize) as u64;
        if m <= k {
            subproof(s, m, off, k, complete, out)?;
            out.push(range_hash(s, off + k, off + len)?);
        } else {
            subproof(s, m - k, off + k, len - k, false, out)?;
            out.push(range_hash(s, off, off + k)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(s, old_size, 0, new_size, true, &mut out)?;
    }
    Ok(out)
}

/// Checks an inclusion proof for leaf *data* `leaf` (an event hash) at `index` (0-based, i.e.
/// `seq - 1`) in the tree of `tree_size` leaves with root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let mut f = index;
    let mut s = tree_size - 1;
    let mut r = leaf_hash(leaf);
    for p in proof {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Checks that the tree `(old_size, old_root)` is a prefix of `(new_size, new_root)`
/// (RFC 9162 §2.1.4.2). Size 0 is consistent with everything (its root must be [`EMPTY_ROOT`]);
/// equal sizes need an empty proof and equal roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldLarger { old_size, new_size });
    }
    if old_size == 0 {
        return if proof.is_empty() && *old_root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Mismatch);
    }
    let mut path = proof.iter();
    let first: &Hash = if old_size.is_power_of_two() {
        old_root
    } else {
        path.next().expect("non-empty")
    };
    let mut f = old_size - 1;
    let mut s = new_size - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in path {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// The root of a growing log in O(log n) state: one hash per set bit of the size (the roots of
/// the perfect subtrees the tree decomposes into, largest first). Push costs one leaf hash plus on
/// average one node hash; `root()` costs `popcount(size) - 1` node hashes.
///
/// The state can be persisted with [`size`](Self::size)/[`peaks`](Self::peaks) and restored with
/// [`from_parts`](Self::from_parts), so a server need not rehash the log at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleAccumulator {
    size: u64,
    peaks: Vec<Hash>,
}

impl MerkleAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The accumulator after pushing every leaf of `leaves` (leaf data).
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut a = Self::new();
        for l in leaves {
            a.push(l);
        }
        a
    }

    /// Restores a state saved from [`size`](Self::size) and [`peaks`](Self::peaks).
    /// `None` unless `peaks.len()` equals the number of set bits of `size`.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(MerkleAccumulator { size, peaks })
    }

    /// Appends a leaf given its data (an event hash).
    pub fn push(&mut self, leaf: &Hash) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Appends a leaf given its already computed leaf hash `SHA-256(0x00 || data)`.
    pub fn push_leaf_hash(&mut self, h: Hash) {
        self.push_reporting(h, |_, _| {});
    }

    /// Appends a leaf hash and tells `completed` every subtree the new leaf completes (level,
    /// hash), smallest first, leaf (level 0) included.
    pub(crate) fn push_reporting(&mut self, mut h: Hash, mut completed: impl FnMut(u32, &Hash)) {
        let mut s = self.size;
        let mut level = 0;
        completed(level, &h);
        while s & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per set bit");
            h = node_hash(&left, &h);
            s >>= 1;
            level += 1;
            completed(level, &h);
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// Number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Roots of the perfect subtrees, largest (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Merkle tree hash of all leaves pushed so far.
    pub fn root(&self) -> Hash {
        let Some((last, rest)) = self.peaks.split_last() else {
            return EMPTY_ROOT;
        };
        rest.iter().rev().fold(*last, |r, p| node_hash(p, &r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let h: Hash = Sha256::digest(b"").into();
        assert_eq!(h, EMPTY_ROOT);
        assert_eq!(root(&[]), EMPTY_ROOT);
    }

    #[test]
    fn split_is_largest_power_below() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(8), 4);
        assert_eq!(split(9), 8);
    }

    #[test]
    fn accumulator_matches_recursive_definition() {
        let leaves: Vec<Hash> = (0..200u32)
            .map(|i| Sha256::digest(i.to_be_bytes()).into())
            .collect();
        let mut acc = MerkleAccumulator::new();
        for n in 0..=leaves.len() {
            assert_eq!(acc.root(), mth(&leaves[..n]), "size {n}");
            let restored = MerkleAccumulator::from_parts(acc.size(), acc.peaks().to_vec()).unwrap();
            assert_eq!(restored.root(), acc.root());
            if n < leaves.len() {
                acc.push(&leaves[n]);
            }
        }
        assert!(MerkleAccumulator::from_parts(3, vec![[0; 32]]).is_none());
    }
}
