//! Test support shared by the query crate's tests and, included by path, the CLI crate's
//! (`query/cli/tests/util`): copying index trees, and [`tokens`]: indexes of generated token ids
//! with a brute-force model of their answers.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

pub mod tokens;

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
