//! Killing the postmaster with SIGKILL and starting it again once its processes are gone.

use super::*;

/// Every process of the cluster in `data` (their working directory), zombies aside.
pub(super) fn cluster_processes(data: &Path) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            if std::fs::read_link(e.path().join("cwd")).ok()? != data {
                return None;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat.rsplit(')').next()?.split_whitespace().next()?.to_string();
            (state != "Z").then_some(pid)
        })
        .collect()
}

/// SIGKILL to the postmaster; once the old server's processes have noticed and gone (each ends
/// when it sees the postmaster is dead; after 20 s the last are killed) and the postmaster has
/// been reaped, a pause of 0.5 to 3 s,
/// then the cluster is started again (crash recovery) and the main connection renewed.
pub(super) fn crash_and_restart(env: &Env, rng: &mut StdRng, start: Instant) -> Kill {
    let at = start.elapsed().as_secs_f64();
    let data: PathBuf = std::fs::canonicalize(env.pg.data()).unwrap_or_else(|_| env.pg.data());
    let pid = env.pg.postmaster_pid();
    assert!(
        cluster_processes(&data).contains(&pid),
        "cannot tell the cluster's processes apart (by their working directory {})",
        data.display()
    );
    signal(pid, "KILL");
    let killed = Instant::now();
    let mut forced = BTreeSet::new();
    loop {
        // the postmaster too must be gone, not a zombie waiting to be reaped: its pid is still
        // in postmaster.pid, and a new postmaster refuses to start while that pid exists
        let left = cluster_processes(&data);
        if left.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        if killed.elapsed() > Duration::from_secs(20) {
            for p in left {
                if forced.insert(p) {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &p.to_string()])
                        .status();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphans_s = killed.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(rng.gen_range(500..=3_000)));
    env.pg.pg_ctl_start();
    env.reconnect();
    Kill {
        at,
        orphans_s,
        down_s: killed.elapsed().as_secs_f64(),
        forced: forced.len(),
    }
}
