use ct_merkle::mem_backed_tree::MemoryBackedTree;
use pedm_audit::merkle::{Hash, leaf_hash, node_hash};
use pedm_audit::{
    BLOCK, BlockError, EMPTY_ROOT, MerkleAccumulator, MerkleIndex, Proof, ProofError,
    consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion,
};
use sha2::{Digest, Sha256};

const MAX: usize = 64;

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u32)
        .map(|i| Sha256::digest(i.to_be_bytes()).into())
        .collect()
}

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Root over pre-hashed leaves, by the RFC 6962 recursion, independent of the crate's code paths.
fn mth_of_leaf_hashes(l: &[Hash]) -> Hash {
    match l.len() {
        0 => EMPTY_ROOT,
        1 => l[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node_hash(&mth_of_leaf_hashes(&l[..k]), &mth_of_leaf_hashes(&l[k..]))
        }
    }
}

/// The Certificate Transparency reference test vectors (RFC 6962 test data, as used by the
/// C++/Go CT implementations): leaves of varying length and the roots of each prefix.
#[test]
fn ct_reference_roots() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    assert_eq!(
        EMPTY_ROOT,
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let lh: Vec<Hash> = inputs.iter().map(|d| leaf_hash(d)).collect();
    let mut acc = MerkleAccumulator::new();
    for (n, r) in roots.iter().enumerate() {
        acc.push_leaf_hash(lh[n]);
        assert_eq!(mth_of_leaf_hashes(&lh[..=n]), h(r), "size {}", n + 1);
        assert_eq!(acc.root(), h(r), "accumulator, size {}", n + 1);
    }
}

fn ct_tree(l: &[Hash]) -> MemoryBackedTree<Sha256, Hash> {
    let mut t = MemoryBackedTree::new();
    for x in l {
        t.push(*x);
    }
    t
}

fn concat(p: &[Hash]) -> Vec<u8> {
    p.iter().flatten().copied().collect()
}

#[test]
fn roots_match_definition_and_ct_merkle() {
    let l = leaves(MAX);
    for n in 0..=MAX {
        let lh: Vec<Hash> = l[..n].iter().map(|x| leaf_hash(x)).collect();
        assert_eq!(root(&l[..n]), mth_of_leaf_hashes(&lh), "size {n}");
        if n > 0 {
            let t = ct_tree(&l[..n]);
            assert_eq!(
                t.root().as_bytes().as_slice(),
                &root(&l[..n])[..],
                "size {n}"
            );
        }
    }
}

#[test]
fn inclusion_every_size_and_index() {
    let l = leaves(MAX + 1);
    for n in 1..=MAX as u64 {
        let r = root(&l[..n as usize]);
        let t = ct_tree(&l[..n as usize]);
        for i in 0..n {
            let leaf = &l[i as usize];
            // Proofs from the full leaf list, against the tree of size n.
            let p = inclusion_proof(&l, i, n).unwrap();
            assert_eq!(verify_inclusion(leaf, i, n, &p, &r), Ok(()), "n={n} i={i}");
            // Byte-identical to an independent implementation, which also accepts ours.
            assert_eq!(
                concat(&p),
                t.prove_inclusion(i as usize).as_bytes(),
                "n={n} i={i}"
            );
            let ctp = ct_merkle::InclusionProof::<Sha256>::from_bytes(concat(&p));
            t.root().verify_inclusion(leaf, i, &ctp).unwrap();

            // Tampering.
            for j in 0..p.len() {
                let mut bad = p.clone();
                bad[j][j % 32] ^= 1;
                assert!(
                    verify_inclusion(leaf, i, n, &bad, &r).is_err(),
                    "n={n} i={i} j={j}"
                );
            }
            if !p.is_empty() {
                let short = &p[..p.len() - 1];
                assert!(verify_inclusion(leaf, i, n, short, &r).is_err());
            }
            let mut long = p.clone();
            long.push(r);
            assert!(
                verify_inclusion(leaf, i, n, &long, &r).is_err(),
                "n={n} i={i}"
            );
            let mut wrong_leaf = *leaf;
            wrong_leaf[0] ^= 0x80;
            assert!(verify_inclusion(&wrong_leaf, i, n, &p, &r).is_err());
            if n > 1 {
                let other = (i + 1) % n;
                assert!(
                    verify_inclusion(leaf, other, n, &p, &r).is_err(),
                    "n={n} i={i}"
                );
            }
            // (The same path can be valid for several sizes; the signed root pins the size.)
            let r_next = root(&l[..n as usize + 1]);
            assert!(
                verify_inclusion(leaf, i, n + 1, &p, &r_next).is_err(),
                "n={n} i={i}"
            );
            let mut wrong_root = r;
            wrong_root[31] ^= 1;
            assert!(verify_inclusion(leaf, i, n, &p, &wrong_root).is_err());
        }
        assert_eq!(
            verify_inclusion(&l[0], n, n, &[], &r),
            Err(ProofError::IndexOutOfRange {
                index: n,
                tree_size: n
            })
        );
        assert!(matches!(
            inclusion_proof(&l[..n as usize], 0, n + 1),
            Err(ProofError::SizeOutOfRange { .. })
        ));
    }
}

#[test]
fn consistency_every_pair() {
    let l = leaves(MAX);
    let roots: Vec<Hash> = (0..=MAX).map(|n| root(&l[..n])).collect();
    for new in 0..=MAX as u64 {
        let t = (new > 0).then(|| ct_tree(&l[..new as usize]));
        for old in 0..=new {
            let (ro, rn) = (&roots[old as usize], &roots[new as usize]);
            let p = consistency_proof(&l, old, new).unwrap();
            assert_eq!(
                verify_consistency(old, new, ro, rn, &p),
                Ok(()),
                "{old}->{new}"
            );
            if old > 0 && old < new {
                let t = t.as_ref().unwrap();
                let ctp = t.prove_consistency((new - old) as usize);
                assert_eq!(concat(&p), ctp.as_bytes(), "{old}->{new}");
                let ct_old = ct_merkle::RootHash::<Sha256>::new((*ro).into(), old);
                let theirs =
                    ct_merkle::ConsistencyProof::<Sha256>::try_from_bytes(concat(&p)).unwrap();
                t.root().verify_consistency(&ct_old, &theirs).unwrap();
            }
            // Tampering: every element, truncation, extension, wrong roots, wrong sizes.
            for j in 0..p.len() {
                let mut bad = p.clone();
                bad[j][(j * 7) % 32] ^= 4;
                assert!(
                    verify_consistency(old, new, ro, rn, &bad).is_err(),
                    "{old}->{new} j={j}"
                );
            }
            if !p.is_empty() {
                assert!(verify_consistency(old, new, ro, rn, &p[..p.len() - 1]).is_err());
            }
            let mut long = p.clone();
            long.push(*rn);
            assert!(
                verify_consistency(old, new, ro, rn, &long).is_err(),
                "{old}->{new}"
            );
            let mut bad_old = *ro;
            bad_old[0] ^= 1;
            assert!(
                verify_consistency(old, new, &bad_old, rn, &p).is_err(),
                "{old}->{new}"
            );
            let mut bad_new = *rn;
            bad_new[0] ^= 1;
            if old > 0 {
                assert!(
                    verify_consistency(old, new, ro, &bad_new, &p).is_err(),
                    "{old}->{new}"
                );
            }
            if old > 0 && old < new {
                // A proof is specific to its sizes.
                if old + 1 < new {
                    let r1 = &roots[old as usize + 1];
                    assert!(
                        verify_consistency(old + 1, new, r1, rn, &p).is_err(),
                        "{old}->{new}"
                    );
                }
                // A different history with the same old prefix length is rejected.
                let mut forked = l[..new as usize].to_vec();
                forked[old as usize - 1][5] ^= 1;
                let fr = root(&forked);
                let fp = consistency_proof(&forked, old, new).unwrap();
                assert!(
                    verify_consistency(old, new, ro, &fr, &fp).is_err(),
                    "{old}->{new}"
                );
            }
        }
        if new > 0 {
            assert!(matches!(
                verify_consistency(
                    new,
                    new - 1,
                    &roots[new as usize],
                    &roots[new as usize - 1],
                    &[]
                ),
                Err(ProofError::OldLarger { .. })
            ));
        }
    }
}

#[test]
fn accumulator_grows_like_root() {
    let l = leaves(1000);
    let mut acc = MerkleAccumulator::new();
    assert_eq!(acc.root(), EMPTY_ROOT);
    for (i, x) in l.iter().enumerate() {
        acc.push(x);
        assert_eq!(acc.size(), i as u64 + 1);
        assert_eq!(acc.peaks().len(), acc.size().count_ones() as usize);
        if i % 37 == 0 || (i + 1).is_power_of_two() {
            assert_eq!(acc.root(), root(&l[..=i]));
        }
    }
    let restored = MerkleAccumulator::from_parts(acc.size(), acc.peaks().to_vec()).unwrap();
    assert_eq!(restored, acc);
}

/// Proves through a [`MerkleIndex`], reading blocks from `all` as the proof names them (as the
/// server reads them from its store), at most `limit` blocks.
fn with_blocks<T>(
    index: &MerkleIndex,
    all: &[Hash],
    limit: usize,
    f: impl Fn(&Proof) -> Result<T, ProofError>,
) -> (T, usize) {
    let mut p = index.proof();
    let mut read = 0;
    loop {
        match f(&p) {
            Ok(v) => return (v, read),
            Err(e) => {
                let block = Proof::needs(&e).unwrap_or_else(|| panic!("{e}"));
                let (a, b) = Proof::block_range(block);
                p.add_block(block, all[a as usize..b as usize].to_vec())
                    .unwrap();
                read += 1;
                assert!(read <= limit, "more than {limit} blocks read");
            }
        }
    }
}

/// Proofs from the index (the large subtrees kept, at most two blocks of leaves read) are the
/// proofs from all leaves, for tree sizes across block boundaries, at every log size.
#[test]
fn index_proofs_equal_proofs_from_all_leaves() {
    const B: u64 = BLOCK;
    let l = leaves(5 * B as usize + 37);
    let sizes = [
        1u64,
        2,
        3,
        B - 1,
        B,
        B + 1,
        2 * B - 1,
        2 * B,
        2 * B + 1,
        2 * B + B / 2 + 3,
        4 * B,
        4 * B + 1,
        5 * B,
        5 * B + 37,
    ];
    let mut index = MerkleIndex::new();
    for (i, x) in l.iter().enumerate() {
        index.push(x);
        let n = i as u64 + 1;
        assert_eq!(index.root(), root(&l[..=i]));
        if !sizes.contains(&n) {
            continue;
        }
        for &size in sizes.iter().filter(|&&s| s <= n) {
            let (r, _) = with_blocks(&index, &l, 1, |p| p.root(size));
            assert_eq!(r, root(&l[..size as usize]), "root of {size} at {n}");
            for leaf in [0, size / 3, size / 2, size - 1] {
                let (proof, read) = with_blocks(&index, &l, 2, |p| p.inclusion(leaf, size));
                assert_eq!(proof, inclusion_proof(&l, leaf, size).unwrap());
                assert!(read <= 2);
                let (data, _) = with_blocks(&index, &l, 1, |p| p.leaf(leaf));
                assert_eq!(data, l[leaf as usize]);
            }
            for &old in sizes.iter().filter(|&&s| s <= size) {
                let (proof, _) = with_blocks(&index, &l, 2, |p| p.consistency(old, size));
                assert_eq!(
                    proof,
                    consistency_proof(&l, old, size).unwrap(),
                    "{old}->{size}"
                );
            }
        }
    }
    assert!(matches!(
        index.proof().inclusion(0, l.len() as u64 + 1),
        Err(ProofError::SizeOutOfRange { .. })
    ));
}

/// A block read back that no longer hashes to the subtree built when it was pushed is refused,
/// naming it; so are short blocks and the incomplete last one.
#[test]
fn a_changed_block_is_refused() {
    const B: usize = BLOCK as usize;
    let mut l = leaves(3 * B + 5);
    let mut index = MerkleIndex::new();
    for x in &l {
        index.push(x);
    }
    let mut p = index.proof();
    l[B + B / 2][0] ^= 1;
    let changed = p.add_block(1, l[B..2 * B].to_vec());
    assert!(
        matches!(changed, Err(BlockError::Changed { block: 1, first, end })
            if first == BLOCK && end == 2 * BLOCK),
        "{changed:?}"
    );
    assert!(matches!(
        p.add_block(0, l[0..B - 1].to_vec()),
        Err(BlockError::Length { .. })
    ));
    assert!(matches!(
        p.add_block(3, l[3 * B..].to_vec()),
        Err(BlockError::NotComplete { block: 3 })
    ));
    assert!(p.add_block(0, l[0..B].to_vec()).is_ok());
}
