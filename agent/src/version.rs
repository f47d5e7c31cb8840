//! Which desired state a node takes: the rule the agent and the simulated
//! dataplane share. A state comes with the controller's epoch (its term: a
//! controller started later, or a second one taking over, has a higher
//! one) and a generation within that epoch (each plan's push steps, in
//! order).
//!
//! - Nothing held: taken.
//! - A higher epoch: taken, whatever its generation (a controller whose
//!   database was reset or restored starts its versions again).
//! - A lower epoch: refused; a newer controller has taken over the node.
//! - The same epoch: an older generation is refused; the same generation
//!   is taken again only with the same state.

/// A desired state's place in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub epoch: u64,
    pub generation: u64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} generation {}", self.epoch, self.generation)
    }
}

/// Why a state was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "epoch: {} is older than epoch {} which the node holds: another controller has taken it over",
        asked.epoch,
        held.epoch
    )]
    Superseded { asked: Version, held: Version },
    #[error(
        "generation: {} is older than generation {} which the node holds",
        asked.generation,
        held.generation
    )]
    Older { asked: Version, held: Version },
    #[error(
        "generation: {} is held already with a different state; a changed state needs a new generation",
        asked.generation
    )]
    Changed { asked: Version },
}

/// Whether a node holding `held` (its version, and whether the state asked
/// is the one it holds) takes a state at `asked`.
pub fn accept(held: Option<(Version, bool)>, asked: Version) -> Result<(), Refusal> {
    let Some((held, same_state)) = held else {
        return Ok(());
    };
    if asked.epoch != held.epoch {
        return if asked.epoch > held.epoch {
            Ok(())
        } else {
            Err(Refusal::Superseded { asked, held })
        };
    }
    if asked.generation < held.generation {
        return Err(Refusal::Older { asked, held });
    }
    if asked.generation == held.generation && !same_state {
        return Err(Refusal::Changed { asked });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(epoch: u64, generation: u64) -> Version {
        Version { epoch, generation }
    }

    #[test]
    fn the_order_of_states() {
        // (held, same state, asked, taken?)
        let cases = [
            (None, true, v(1, 1), Ok(())),
            (Some(v(5, 900)), false, v(6, 1), Ok(())),
            (
                Some(v(6, 1)),
                false,
                v(5, 901),
                Err(Refusal::Superseded {
                    asked: v(5, 901),
                    held: v(6, 1),
                }),
            ),
            (
                Some(v(5, 9)),
                false,
                v(5, 8),
                Err(Refusal::Older {
                    asked: v(5, 8),
                    held: v(5, 9),
                }),
            ),
            (Some(v(5, 9)), true, v(5, 9), Ok(())),
            (
                Some(v(5, 9)),
                false,
                v(5, 9),
                Err(Refusal::Changed { asked: v(5, 9) }),
            ),
            (Some(v(5, 9)), false, v(5, 10), Ok(())),
            // Controllers without epochs send 0: below any epoch.
            (
                Some(v(1, 1)),
                false,
                v(0, 99),
                Err(Refusal::Superseded {
                    asked: v(0, 99),
                    held: v(1, 1),
                }),
            ),
        ];
        for (held, same, asked, expected) in cases {
            assert_eq!(
                accept(held.map(|h| (h, same)), asked),
                expected,
                "{held:?} {same} {asked:?}"
            );
        }
        let text = Refusal::Superseded {
            asked: v(5, 1),
            held: v(6, 1),
        }
        .to_string();
        assert!(text.contains("taken it over"), "{text}");
    }
}
