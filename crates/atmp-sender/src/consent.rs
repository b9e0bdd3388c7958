//! Who is extracted (SOURCE.md §1) and where each collectivité's data goes (§3).
//!
//! Pure functions over the rows of the source: no I/O, so every consent case is tested
//! directly.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::source::{Autorisation, SourceCollectivite};

/// The latest consent state of a collectivité on a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Etat {
    Accordee,
    Refusee,
    Retiree,
    /// No row on or before the day (or an unknown `statut`, which is never taken as consent).
    Aucune,
}

/// Why a collectivité is not extracted (the codes of the run's report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Raison {
    SansAutorisation,
    Refus,
    Retrait,
    CdgSansAutorisation,
}

impl Raison {
    pub fn code(&self) -> &'static str {
        match self {
            Raison::SansAutorisation => "sans_autorisation",
            Raison::Refus => "refus",
            Raison::Retrait => "retrait",
            Raison::CdgSansAutorisation => "cdg_sans_autorisation",
        }
    }

    pub fn fr(&self) -> &'static str {
        match self {
            Raison::SansAutorisation => "pas d'autorisation de transfert enregistrée",
            Raison::Refus => "refus de transfert enregistré",
            Raison::Retrait => "autorisation retirée",
            Raison::CdgSansAutorisation => {
                "rattachée à un CDG sans autorisation, et sans autorisation propre"
            }
        }
    }
}

/// Where the data go: one file per destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    /// The SIRET the file is named after: the CDG's for a grouped file.
    pub siret: String,
    /// Set for a grouped CDG file (the header's `<cdg>`).
    pub cdg: bool,
    /// The collectivités of the file, each a block: for a CDG, its own SIRET first (its
    /// block is written only when it has data), then its extracted members.
    pub collectivites: Vec<String>,
}

/// The outcome of the consent rules on a day.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub destinations: Vec<Destination>,
    pub exclues: Vec<(String, Raison)>,
}

/// The latest state of each collectivité on `day` (`YYYY-MM-DD`): the latest row by
/// `date`, then `id`, with `date` ≤ `day`.
pub fn etats(autorisations: &[Autorisation], day: &str) -> BTreeMap<String, Etat> {
    let mut latest: BTreeMap<&str, &Autorisation> = BTreeMap::new();
    for a in autorisations.iter().filter(|a| a.date.as_str() <= day) {
        let e = latest.entry(a.collectivite_siret.as_str()).or_insert(a);
        if (a.date.as_str(), a.id) > (e.date.as_str(), e.id) {
            *e = a;
        }
    }
    latest
        .into_iter()
        .map(|(s, a)| {
            let etat = match a.statut.trim() {
                "accordee" => Etat::Accordee,
                "refusee" => Etat::Refusee,
                "retiree" => Etat::Retiree,
                _ => Etat::Aucune,
            };
            (s.to_string(), etat)
        })
        .collect()
}

/// Applies SOURCE.md §1 and §3.
pub fn plan(
    collectivites: &[SourceCollectivite],
    autorisations: &[Autorisation],
    day: &str,
) -> Plan {
    let etats = etats(autorisations, day);
    let etat = |s: &str| etats.get(s).copied().unwrap_or(Etat::Aucune);
    let known: BTreeSet<&str> = collectivites.iter().map(|c| c.siret.as_str()).collect();
    // CDG SIRET → its extracted members; own files for the others.
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut own: Vec<String> = Vec::new();
    let mut exclues = Vec::new();
    for c in collectivites {
        let mine = etat(&c.siret);
        let cdg = c
            .cdg_siret
            .as_deref()
            .filter(|s| *s != c.siret && known.contains(s));
        match cdg {
            None => match mine {
                Etat::Accordee => own.push(c.siret.clone()),
                Etat::Refusee => exclues.push((c.siret.clone(), Raison::Refus)),
                Etat::Retiree => exclues.push((c.siret.clone(), Raison::Retrait)),
                Etat::Aucune => exclues.push((c.siret.clone(), Raison::SansAutorisation)),
            },
            Some(cdg) => {
                let covered = etat(cdg) == Etat::Accordee;
                match (covered, mine) {
                    (_, Etat::Refusee) => exclues.push((c.siret.clone(), Raison::Refus)),
                    (_, Etat::Retiree) => exclues.push((c.siret.clone(), Raison::Retrait)),
                    (true, _) => grouped
                        .entry(cdg.to_string())
                        .or_default()
                        .push(c.siret.clone()),
                    (false, Etat::Accordee) => own.push(c.siret.clone()),
                    (false, Etat::Aucune) => {
                        exclues.push((c.siret.clone(), Raison::CdgSansAutorisation))
                    }
                }
            }
        }
    }
    // A collectivité to which others are attached is a CDG: when it is extracted itself, or
    // covers extracted members, its destination is one grouped file.
    let is_cdg = |s: &str| {
        collectivites
            .iter()
            .any(|c| c.cdg_siret.as_deref() == Some(s) && c.siret != s)
    };
    let mut destinations = Vec::new();
    for s in &own {
        if is_cdg(s) {
            let mut list = vec![s.clone()];
            list.extend(grouped.remove(s).unwrap_or_default());
            destinations.push(Destination {
                siret: s.clone(),
                cdg: true,
                collectivites: list,
            });
        } else {
            destinations.push(Destination {
                siret: s.clone(),
                cdg: false,
                collectivites: vec![s.clone()],
            });
        }
    }
    // Members covered by a CDG that is not itself extracted (a CDG attached to another):
    // the grouped file holds the members only.
    for (cdg, members) in grouped {
        destinations.push(Destination {
            siret: cdg,
            cdg: true,
            collectivites: members,
        });
    }
    destinations.sort_by(|a, b| a.siret.cmp(&b.siret));
    exclues.sort();
    Plan {
        destinations,
        exclues,
    }
}

impl PartialOrd for Raison {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Raison {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.code().cmp(other.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coll(siret: &str, cdg: Option<&str>) -> SourceCollectivite {
        SourceCollectivite {
            siret: siret.into(),
            nom: siret.into(),
            cdg_siret: cdg.map(Into::into),
            limite_anteriorite: None,
        }
    }
    fn aut(id: i64, s: &str, statut: &str, date: &str) -> Autorisation {
        Autorisation {
            id,
            collectivite_siret: s.into(),
            statut: statut.into(),
            date: date.into(),
        }
    }

    #[test]
    fn latest_row_by_date_then_id_on_or_before_the_day() {
        let a = [
            aut(1, "A", "accordee", "2026-01-01"),
            aut(3, "A", "retiree", "2026-03-01"),
            aut(2, "A", "refusee", "2026-03-01"),
            aut(4, "A", "accordee", "2026-12-31"),
        ];
        assert_eq!(etats(&a, "2026-02-28")["A"], Etat::Accordee);
        // Same date: the larger id decides, whatever the order of the rows.
        assert_eq!(etats(&a, "2026-03-01")["A"], Etat::Retiree);
        // A row dated after the day does not count yet; on its day it does.
        assert_eq!(etats(&a, "2026-12-30")["A"], Etat::Retiree);
        assert_eq!(etats(&a, "2026-12-31")["A"], Etat::Accordee);
        assert!(!etats(&a, "2025-12-31").contains_key("A"));
    }

    #[test]
    fn every_consent_case() {
        let c = [
            coll("ALONE_OK", None),
            coll("ALONE_NONE", None),
            coll("ALONE_REF", None),
            coll("CDG", None),
            coll("M_NONE", Some("CDG")),
            coll("M_REF", Some("CDG")),
            coll("M_RET", Some("CDG")),
            coll("CDG2", None),
            coll("N_NONE", Some("CDG2")),
            coll("N_OWN", Some("CDG2")),
        ];
        let a = [
            aut(1, "ALONE_OK", "accordee", "2026-01-01"),
            aut(2, "ALONE_REF", "accordee", "2026-01-01"),
            aut(3, "ALONE_REF", "refusee", "2026-02-01"),
            aut(4, "CDG", "accordee", "2026-01-01"),
            aut(5, "M_REF", "refusee", "2026-01-01"),
            aut(6, "M_RET", "accordee", "2026-01-01"),
            aut(7, "M_RET", "retiree", "2026-02-01"),
            aut(8, "N_OWN", "accordee", "2026-01-01"),
            aut(9, "CDG2", "refusee", "2026-01-01"),
        ];
        let p = plan(&c, &a, "2026-06-01");
        assert_eq!(
            p.destinations,
            vec![
                Destination {
                    siret: "ALONE_OK".into(),
                    cdg: false,
                    collectivites: vec!["ALONE_OK".into()]
                },
                Destination {
                    siret: "CDG".into(),
                    cdg: true,
                    collectivites: vec!["CDG".into(), "M_NONE".into()]
                },
                Destination {
                    siret: "N_OWN".into(),
                    cdg: false,
                    collectivites: vec!["N_OWN".into()]
                },
            ]
        );
        let mut ex = p.exclues.clone();
        ex.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            ex,
            vec![
                ("ALONE_NONE".into(), Raison::SansAutorisation),
                ("ALONE_REF".into(), Raison::Refus),
                ("CDG2".into(), Raison::Refus),
                ("M_REF".into(), Raison::Refus),
                ("M_RET".into(), Raison::Retrait),
                ("N_NONE".into(), Raison::CdgSansAutorisation),
            ]
        );
    }

    #[test]
    fn a_consenting_cdg_without_extracted_members_is_still_a_grouped_destination() {
        let c = [coll("CDG", None), coll("M", Some("CDG"))];
        let a = [
            aut(1, "CDG", "accordee", "2026-01-01"),
            aut(2, "M", "refusee", "2026-01-01"),
        ];
        let p = plan(&c, &a, "2026-06-01");
        assert_eq!(p.destinations.len(), 1);
        assert!(p.destinations[0].cdg);
        assert_eq!(p.destinations[0].collectivites, vec!["CDG".to_string()]);
    }
}
