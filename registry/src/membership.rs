use std::collections::BTreeMap;

use crate::{Change, Instance};

/// The instances a watcher has announced so far, so that it announces only real changes.
///
/// A put of an unchanged instance (a re-registration under a new lease) yields nothing;
/// after a re-list, [`Membership::resync`] yields exactly the difference.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    known: BTreeMap<(String, String), Instance>,
}

impl Membership {
    pub fn new(instances: impl IntoIterator<Item = Instance>) -> Self {
        Self {
            known: instances
                .into_iter()
                .map(|i| ((i.service.clone(), i.id.clone()), i))
                .collect(),
        }
    }

    pub fn put(&mut self, instance: Instance) -> Option<Change> {
        let key = (instance.service.clone(), instance.id.clone());
        match self.known.insert(key, instance.clone()) {
            None => Some(Change::Joined(instance)),
            Some(previous) if previous == instance => None,
            Some(_) => Some(Change::Updated(instance)),
        }
    }

    pub fn delete(&mut self, service: &str, id: &str) -> Option<Change> {
        self.known
            .remove(&(service.to_owned(), id.to_owned()))
            .map(Change::Left)
    }

    /// Replaces what is known by a fresh listing and returns the changes between them:
    /// leaves first, then joins and updates, each in key order.
    pub fn resync(&mut self, fresh: Vec<Instance>) -> Vec<Change> {
        let fresh = Membership::new(fresh);
        let mut changes: Vec<Change> = self
            .known
            .iter()
            .filter(|(key, _)| !fresh.known.contains_key(*key))
            .map(|(_, gone)| Change::Left(gone.clone()))
            .collect();
        for (key, instance) in &fresh.known {
            match self.known.get(key) {
                None => changes.push(Change::Joined(instance.clone())),
                Some(old) if old != instance => changes.push(Change::Updated(instance.clone())),
                Some(_) => {}
            }
        }
        self.known = fresh.known;
        changes
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, address: &str) -> Instance {
        Instance {
            started_at_ms: 0,
            ..Instance::new("user", address).with_id(id)
        }
    }

    #[test]
    fn putting_an_unchanged_instance_announces_nothing() {
        let mut m = Membership::default();
        assert_eq!(
            m.put(node("a", "h:1")),
            Some(Change::Joined(node("a", "h:1")))
        );
        assert_eq!(m.put(node("a", "h:1")), None);
        assert_eq!(
            m.put(node("a", "h:2")),
            Some(Change::Updated(node("a", "h:2")))
        );
        assert_eq!(m.delete("user", "a"), Some(Change::Left(node("a", "h:2"))));
        assert_eq!(m.delete("user", "a"), None);
    }

    #[test]
    fn resync_yields_only_the_real_difference() {
        let stayed = node("stayed", "h:1");
        let mut m = Membership::new([stayed.clone(), node("gone", "h:2"), node("moved", "h:3")]);
        let changes = m.resync(vec![stayed, node("moved", "h:4"), node("new", "h:5")]);
        assert_eq!(
            changes,
            vec![
                Change::Left(node("gone", "h:2")),
                Change::Updated(node("moved", "h:4")),
                Change::Joined(node("new", "h:5")),
            ]
        );
        assert_eq!(m.len(), 3);
    }
}
