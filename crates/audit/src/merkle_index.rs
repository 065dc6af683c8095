//! The Merkle tree of a growing log kept for proofs in O(log n): every complete subtree of
//! [`BLOCK`] leaves or more, plus the leaf data of the last, incomplete block. A proof of any
//! tree size up to the log's needs at most two blocks of leaf data besides (the leaf's own
//! block and the block where the proved tree ends), which the caller reads from its store and
//! hands in; a block it hands in is checked against the subtree kept for it.
//!
//! Memory: about two hashes per block, 60 MB at 30M leaves. Built as leaves are pushed, at no
//! hashing cost beyond the accumulator's (the subtrees are the ones it forms anyway).
//!
//! The block size trades memory for what a proof reads: a block of 32 event hashes is a few
//! pages of the store and 63 SHA-256 to check; 256 (the first choice) cost 8 MB at 30M leaves
//! but a proof read 256 rows from the database, most of its time at 30M events.

use crate::merkle::{
    Hash, MerkleAccumulator, ProofError, Subtrees, consistency_proof_in, inclusion_proof_in,
    leaf_hash, mth, node_hash, range_hash,
};
use std::collections::HashMap;

/// log2 of the number of leaves in a block.
pub const BLOCK_LEVEL: u32 = 5;
/// Leaves per block: the unit a proof reads leaf data in.
pub const BLOCK: u64 = 1 << BLOCK_LEVEL;

#[derive(Debug, Clone, Default)]
pub struct MerkleIndex {
    acc: MerkleAccumulator,
    /// `levels[i][j]`: the subtree of level `BLOCK_LEVEL + i` at index `j`.
    levels: Vec<Vec<Hash>>,
    /// Leaf data of the incomplete last block.
    tail: Vec<Hash>,
}

impl MerkleIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf given its data (an event hash).
    pub fn push(&mut self, leaf: &Hash) {
        let levels = &mut self.levels;
        self.acc.push_reporting(leaf_hash(leaf), |level, h| {
            if let Some(i) = level.checked_sub(BLOCK_LEVEL) {
                let i = i as usize;
                if levels.len() == i {
                    levels.push(Vec::new());
                }
                levels[i].push(*h);
            }
        });
        self.tail.push(*leaf);
        if self.tail.len() as u64 == BLOCK {
            self.tail.clear();
        }
    }

    pub fn size(&self) -> u64 {
        self.acc.size()
    }

    pub fn is_empty(&self) -> bool {
        self.acc.is_empty()
    }

    /// Merkle tree hash of all leaves pushed so far.
    pub fn root(&self) -> Hash {
        self.acc.root()
    }

    /// Starts a proof: the blocks of leaf data it needs are added with [`Proof::add_block`]
    /// as [`Proof::needs`] names them.
    pub fn proof(&self) -> Proof<'_> {
        Proof {
            index: self,
            blocks: HashMap::new(),
        }
    }

    fn complete_blocks(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }
}

/// Why a block of leaf data handed to a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {block} has {got} leaves, expected {want}")]
    Length { block: u64, got: usize, want: usize },
    #[error(
        "the leaves of block {block} (leaves {first}..{end}) do not hash to the subtree built \
         from them when they were checked: they changed since"
    )]
    Changed { block: u64, first: u64, end: u64 },
    #[error("block {block} is not complete yet (it is kept in memory)")]
    NotComplete { block: u64 },
}

/// A proof in the making over a [`MerkleIndex`] and the blocks read for it.
pub struct Proof<'a> {
    index: &'a MerkleIndex,
    blocks: HashMap<u64, Block>,
}

/// A complete block read for a proof: its leaf data and every subtree in it.
struct Block {
    data: Vec<Hash>,
    /// `levels[l][j]`: the subtree of level `l` at index `j` within the block;
    /// `levels[BLOCK_LEVEL][0]` is the block's root.
    levels: Vec<Vec<Hash>>,
}

impl Block {
    fn new(data: Vec<Hash>) -> Block {
        let mut levels: Vec<Vec<Hash>> = vec![data.iter().map(|d| leaf_hash(d)).collect()];
        while let Some(prev) = levels.last().filter(|l| l.len() > 1) {
            let next = prev.chunks(2).map(|c| node_hash(&c[0], &c[1])).collect();
            levels.push(next);
        }
        Block { data, levels }
    }

    fn root(&self) -> Option<&Hash> {
        self.levels
            .get(BLOCK_LEVEL as usize)
            .and_then(|l| l.first())
    }
}

impl Proof<'_> {
    /// The block of leaf data the last attempt missed, if that is why it failed.
    pub fn needs(e: &ProofError) -> Option<u64> {
        match e {
            ProofError::Unavailable { level, index } if *level < BLOCK_LEVEL => {
                Some((index << level) >> BLOCK_LEVEL)
            }
            _ => None,
        }
    }

    /// Leaves `first..end` of block `block`, the range to read from the store.
    pub fn block_range(block: u64) -> (u64, u64) {
        (block * BLOCK, (block + 1) * BLOCK)
    }

    /// Adds the leaf data of a complete block, checked against the subtree kept for it.
    pub fn add_block(&mut self, block: u64, leaves: Vec<Hash>) -> Result<(), BlockError> {
        if block >= self.index.complete_blocks() {
            return Err(BlockError::NotComplete { block });
        }
        if leaves.len() as u64 != BLOCK {
            return Err(BlockError::Length {
                block,
                got: leaves.len(),
                want: BLOCK as usize,
            });
        }
        let (first, end) = Self::block_range(block);
        let b = Block::new(leaves);
        if b.root() != self.index.levels[0].get(block as usize) {
            return Err(BlockError::Changed { block, first, end });
        }
        self.blocks.insert(block, b);
        Ok(())
    }

    /// Leaf data of leaf `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, ProofError> {
        let block = index >> BLOCK_LEVEL;
        self.block_leaves(block)
            .and_then(|l| l.get((index - block * BLOCK) as usize).copied())
            .ok_or(ProofError::Unavailable { level: 0, index })
    }

    pub fn inclusion(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(tree_size)?;
        inclusion_proof_in(self, index, tree_size)
    }

    pub fn consistency(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new_size)?;
        consistency_proof_in(self, old_size, new_size)
    }

    /// MTH of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        range_hash(self, 0, size)
    }

    fn check_size(&self, tree_size: u64) -> Result<(), ProofError> {
        let available = self.index.size();
        if tree_size > available {
            return Err(ProofError::SizeOutOfRange {
                tree_size,
                available,
            });
        }
        Ok(())
    }

    fn block_leaves(&self, block: u64) -> Option<&[Hash]> {
        if block == self.index.complete_blocks() {
            Some(&self.index.tail)
        } else {
            self.blocks.get(&block).map(|b| b.data.as_slice())
        }
    }
}

impl Subtrees for Proof<'_> {
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let missing = ProofError::Unavailable { level, index };
        if let Some(i) = level.checked_sub(BLOCK_LEVEL) {
            return self
                .index
                .levels
                .get(i as usize)
                .and_then(|l| l.get(index as usize))
                .copied()
                .ok_or(missing);
        }
        let first = index << level;
        let block = first >> BLOCK_LEVEL;
        if let Some(b) = self.blocks.get(&block) {
            let within = index - (block << (BLOCK_LEVEL - level));
            return b.levels[level as usize]
                .get(within as usize)
                .copied()
                .ok_or(missing);
        }
        // The incomplete last block, kept in memory: small, hashed when asked.
        let leaves = self.block_leaves(block).ok_or(missing.clone())?;
        let start = (first - block * BLOCK) as usize;
        let data = leaves
            .get(start..start + (1usize << level))
            .ok_or(missing)?;
        Ok(mth(data))
    }
}
