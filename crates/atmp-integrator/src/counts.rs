//! Record counts by kind and outcome (§7 `counts`).

use atmp_flux::spec::RecordKind;

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Added = 0,
    Existing = 1,
    Rejected = 2,
}

/// Added / existing / rejected numbers for each counted kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    c: [[u64; 3]; 8],
}

impl Counts {
    pub fn add(&mut self, kind: RecordKind, outcome: Outcome, n: u64) {
        let i = kind.index();
        if i < 8 {
            self.c[i][outcome as usize] += n;
        }
    }

    /// (added, existing, rejected) of a kind.
    pub fn get(&self, kind: RecordKind) -> (u64, u64, u64) {
        let i = kind.index();
        (self.c[i][0], self.c[i][1], self.c[i][2])
    }

    /// The totals line of a log, in French.
    pub fn summary(&self) -> String {
        RecordKind::COUNTED
            .iter()
            .map(|k| {
                let (a, e, r) = self.get(*k);
                format!(
                    "{} : {a} ajouté(s), {e} déjà présent(s), {r} rejeté(s)",
                    k.label_plural()
                )
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Counts) {
        for i in 0..8 {
            for j in 0..3 {
                self.c[i][j] += other.c[i][j];
            }
        }
    }
}
