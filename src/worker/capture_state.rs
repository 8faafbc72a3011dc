//! `integ.capture_state`: what the capture knows about its slot that must survive the slot.
//! Replication slots are not copied to standbys nor kept by base backups and pg_upgrade, so a
//! slot that is missing, or does not reach back to where the capture last moved it, while this
//! row says messages were being captured, means messages may be gone: EGDC's stock is read again
//! from the tracked tables (`resync`).

use crate::alerts::{self, Alert};
use crate::spi_util::worker_transaction;
use pgrx::prelude::*;

/// The row as the capture worker reads it.
pub struct Recorded {
    pub by_message: bool,
    /// Where the slot was last moved to (an upper bound: the position is written first).
    pub slot_restart: Option<i64>,
}

impl Recorded {
    /// Whether a slot restarting at `restart` (None: no slot) may have lost messages.
    pub fn lost_by(&self, restart: Option<i64>) -> bool {
        self.by_message
            && match restart {
                None => true,
                Some(r) => self.slot_restart.is_some_and(|recorded| r > recorded),
            }
    }
}

pub fn read() -> Result<Recorded, String> {
    worker_transaction(|| {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT by_message, (slot_restart - '0/0')::int8 FROM integ.capture_state",
                None,
                &[],
            )?;
            if t.is_empty() {
                return Ok(Recorded {
                    by_message: false,
                    slot_restart: None,
                });
            }
            let r = t.first();
            Ok::<_, pgrx::spi::SpiError>(Recorded {
                by_message: r.get::<bool>(1)?.unwrap_or(false),
                slot_restart: r.get::<i64>(2)?,
            })
        })
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| format!("reading integ.capture_state: {e}"))
}

/// Capturing by message from a slot at `restart` (or moving it there): recorded, and
/// committed, before the slot moves.
pub fn capturing(restart: i64) -> Result<(), String> {
    write(true, Some(restart))
}

/// Not capturing by message (the table path; or about to re-read after a loss).
pub fn stopped() -> Result<(), String> {
    write(false, None)
}

fn write(by_message: bool, restart: Option<i64>) -> Result<(), String> {
    worker_transaction(|| {
        Spi::run_with_args(
            "INSERT INTO integ.capture_state AS s (id, by_message, slot_restart) VALUES (true, $1, '0/0'::pg_lsn + $2::numeric)
             ON CONFLICT (id) DO UPDATE SET by_message = EXCLUDED.by_message, slot_restart = EXCLUDED.slot_restart, updated_at = now()",
            &[by_message.into(), restart.into()],
        )
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| format!("writing integ.capture_state: {e}"))
}

/// Messages may be lost (`why`): every mapped product's listings are brought back to EGDC's
/// stock as the tracked tables hold it now (newer-wins by position, as for any change), the
/// record says capture by message stopped, and one `capture_resynced` alert is raised, all in
/// one transaction. Returns how many products were read again.
pub fn resync(why: &str) -> Result<i64, String> {
    worker_transaction(|| {
        let seeded = Spi::get_one::<i64>(
            "SELECT count(*) FILTER (WHERE integ.seed_listing_stock(tenant_id, product_id))
               FROM (SELECT DISTINCT tenant_id, product_id FROM integ.listings) p",
        )?
        .unwrap_or(0);
        // prices went by message too: read again where a tracked price table has the product
        Spi::run(
            "SELECT count(integ.seed_listing_price(tenant_id, product_id))
               FROM (SELECT DISTINCT tenant_id, product_id FROM integ.listings) p
              WHERE EXISTS (SELECT 1 FROM integ.tracked_price_tables)",
        )?;
        Spi::run(
            "UPDATE integ.capture_state SET by_message = false, slot_restart = NULL, updated_at = now()",
        )?;
        let message = format!(
            "{why}: stock changes captured by WAL message may not have been applied; the stock of {seeded} products was read again from the tracked tables"
        );
        alerts::raise(&Alert {
            tenant_id: "*",
            marketplace: "*",
            connection_id: None,
            kind: "capture_resynced",
            message: &message,
        });
        warning!("integration capture: {message}");
        Ok::<_, pgrx::spi::SpiError>(seeded)
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| format!("reading EGDC's stock again ({why}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_lost_when_missing_or_newer_than_recorded_while_capturing() {
        let capturing = Recorded {
            by_message: true,
            slot_restart: Some(1_000),
        };
        assert!(capturing.lost_by(None), "no slot");
        assert!(capturing.lost_by(Some(1_001)), "a slot made after the record");
        assert!(!capturing.lost_by(Some(1_000)));
        assert!(
            !capturing.lost_by(Some(10)),
            "the record is written before the slot moves"
        );
        let table_path = Recorded {
            by_message: false,
            slot_restart: None,
        };
        assert!(
            !table_path.lost_by(None),
            "a first install creates its slot without a re-read"
        );
        assert!(!table_path.lost_by(Some(5)));
    }
}
