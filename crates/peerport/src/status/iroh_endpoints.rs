//! The iroh metrics of endpoints that come and go: the `iroh-manual` mode
//! binds one endpoint per session. Each endpoint's series carry an
//! `endpoint` label (its short id) and every family is written once, as
//! OpenMetrics requires, however many endpoints are up. A series goes
//! away with its endpoint.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use super::Extra;

type Registries = Mutex<BTreeMap<u64, iroh_metrics::Registry>>;

/// The endpoints whose metrics `/metrics` shows; clones share the set.
#[derive(Clone, Default)]
pub struct IrohEndpoints {
    registries: Arc<Registries>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for IrohEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.registries.lock().expect("endpoints").len();
        write!(f, "IrohEndpoints({n})")
    }
}

/// An endpoint's place in an [`IrohEndpoints`]: its series go when this drops.
#[derive(Debug)]
pub struct Listed {
    registries: std::sync::Weak<Registries>,
    key: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(r) = self.registries.upgrade() {
            r.lock().expect("endpoints").remove(&self.key);
        }
    }
}

impl IrohEndpoints {
    /// Show `ep`'s metrics until the returned guard drops.
    pub fn add(&self, ep: &iroh::Endpoint) -> Listed {
        let mut reg = iroh_metrics::Registry::default();
        reg.sub_registry_with_prefix("iroh")
            .sub_registry_with_label("endpoint", ep.id().fmt_short().to_string())
            .register_all(ep.metrics());
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.registries.lock().expect("endpoints").insert(key, reg);
        Listed {
            registries: Arc::downgrade(&self.registries),
            key,
        }
    }

    /// The metrics of every endpoint listed at the time of each scrape.
    pub fn extra(&self) -> Extra {
        let registries = self.registries.clone();
        Box::new(move |w| {
            let mut texts = Vec::new();
            for reg in registries.lock().expect("endpoints").values() {
                let mut t = String::new();
                reg.encode_openmetrics_to_writer(&mut t)?;
                texts.push(t);
            }
            w.push_str(&merge_families(&texts));
            Ok(())
        })
    }
}

/// iroh's endpoint metrics as an [`Extra`].
pub fn iroh_endpoint(ep: &iroh::Endpoint) -> Extra {
    let mut reg = iroh_metrics::Registry::default();
    reg.sub_registry_with_prefix("iroh")
        .register_all(ep.metrics());
    Box::new(move |w| reg.encode_openmetrics_to_writer(w))
}

/// OpenMetrics texts with the same families (one per endpoint) as one
/// text: each family's `# HELP`/`# TYPE`/`# UNIT` lines once, then the
/// samples of every text, families in the order first seen.
pub fn merge_families(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for text in texts {
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.is_empty() || line.starts_with("# EOF") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE ", "# UNIT "]
                .iter()
                .find_map(|p| line.strip_prefix(p));
            if let Some(rest) = meta {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                let entry = families.entry(name.clone()).or_insert_with(|| {
                    order.push(name.clone());
                    Default::default()
                });
                if !entry.0.iter().any(|l| l == line) {
                    entry.0.push(line.to_string());
                }
                current = Some(name);
                continue;
            }
            // a sample belongs to the family described last
            let name = current.clone().unwrap_or_default();
            let entry = families.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                Default::default()
            });
            entry.1.push(line.to_string());
        }
    }
    let mut out = String::new();
    for name in order {
        let (meta, samples) = &families[&name];
        for l in meta.iter().chain(samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_once_with_every_endpoints_samples() {
        let one = |id: &str, n: u32| {
            format!(
                "# HELP iroh_sent Bytes sent.\n# TYPE iroh_sent counter\niroh_sent_total{{endpoint=\"{id}\"}} {n}\n# HELP iroh_up Paths up.\n# TYPE iroh_up gauge\niroh_up{{endpoint=\"{id}\"}} 1\n"
            )
        };
        let merged = merge_families(&[one("a", 5), one("b", 7)]);
        assert_eq!(
            merged,
            "# HELP iroh_sent Bytes sent.\n# TYPE iroh_sent counter\niroh_sent_total{endpoint=\"a\"} 5\niroh_sent_total{endpoint=\"b\"} 7\n# HELP iroh_up Paths up.\n# TYPE iroh_up gauge\niroh_up{endpoint=\"a\"} 1\niroh_up{endpoint=\"b\"} 1\n"
        );
        assert_eq!(merge_families(&[one("a", 5)]), one("a", 5));
        assert_eq!(merge_families(&[]), "");
    }

    #[tokio::test]
    async fn an_endpoints_series_go_with_it() {
        let set = IrohEndpoints::default();
        let extra = set.extra();
        let bind = || async {
            iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
                .relay_mode(iroh::RelayMode::Disabled)
                .clear_ip_transports()
                .bind_addr("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
                .unwrap()
                .bind()
                .await
                .unwrap()
        };
        let (a, b) = (bind().await, bind().await);
        let (la, lb) = (set.add(&a), set.add(&b));
        let mut text = String::new();
        extra(&mut text).unwrap();
        let (ia, ib) = (
            a.id().fmt_short().to_string(),
            b.id().fmt_short().to_string(),
        );
        assert!(text.contains(&format!("endpoint=\"{ia}\"")), "{text}");
        assert!(text.contains(&format!("endpoint=\"{ib}\"")), "{text}");
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let distinct: std::collections::HashSet<_> =
            text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        assert_eq!(types, distinct.len(), "a family written twice:\n{text}");
        drop(la);
        let mut text = String::new();
        extra(&mut text).unwrap();
        assert!(!text.contains(&ia) && text.contains(&ib), "{text}");
        drop(lb);
        a.close().await;
        b.close().await;
    }
}
