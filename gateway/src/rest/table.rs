//! The REST routes of the whole cluster: every `google.api.http` rule of every service's
//! newest running version, in one table the public port looks requests up in.

use std::collections::BTreeMap;

use http::Method;
use prost_reflect::MethodDescriptor;

use super::rule::{HttpRule, rules_of};
use super::template::{Bindings, RouteTable};

/// Where one REST route goes.
#[derive(Debug, Clone)]
pub struct RestRoute {
    /// The registry name of the service (`user`).
    pub service: String,
    pub method: MethodDescriptor,
    pub rule: HttpRule,
}

/// A route that lost to another of the same shape, or a rule that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    pub service: String,
    pub method: String,
    pub route: String,
    pub reason: String,
}

/// The table, with what was left out of it and why.
#[derive(Debug, Default)]
pub struct RestTable {
    routes: RouteTable<RestRoute>,
    refused: Vec<Refused>,
}

impl RestTable {
    /// The table of `services` (registry name → the methods of its newest version).
    /// Services are taken in name order and a route already taken keeps its first owner,
    /// so that two services declaring the same route always resolve the same way.
    pub fn build(services: &BTreeMap<String, Vec<MethodDescriptor>>) -> Self {
        let mut table = Self::default();
        for (service, methods) in services {
            for method in methods {
                for rule in rules_of(method) {
                    let rule = match rule {
                        Ok(rule) => rule,
                        Err(error) => {
                            table.refused.push(Refused {
                                service: service.clone(),
                                method: method.full_name().to_owned(),
                                route: String::new(),
                                reason: error.to_string(),
                            });
                            continue;
                        }
                    };
                    let shown = format!("{} {}", rule.method, rule.template);
                    let route = RestRoute {
                        service: service.clone(),
                        method: method.clone(),
                        rule: rule.clone(),
                    };
                    if let Err(conflict) = table.routes.insert(rule.method, rule.template, route) {
                        let owner = table
                            .routes
                            .iter()
                            .find(|(verb, template, _)| {
                                **verb == conflict.method && template.as_str() == conflict.existing
                            })
                            .map(|(_, _, route)| {
                                format!("{} of {}", route.method.full_name(), route.service)
                            })
                            .unwrap_or_default();
                        table.refused.push(Refused {
                            service: service.clone(),
                            method: method.full_name().to_owned(),
                            route: shown,
                            reason: format!(
                                "the same route as {} {}, which {owner} serves",
                                conflict.method, conflict.existing
                            ),
                        });
                    }
                }
            }
        }
        table
    }

    /// The route `method path` reaches, and its path variables.
    pub fn find(&self, method: &Method, path: &str) -> Option<(&RestRoute, Bindings<'_>)> {
        self.routes.find(method, path)
    }

    /// The HTTP methods some route takes at `path`, for a 405's `Allow`.
    pub fn methods_at(&self, path: &str) -> Vec<Method> {
        let mut methods: Vec<Method> = Vec::new();
        for (verb, template, _) in self.routes.iter() {
            if !methods.contains(verb) && template.matches(path).is_some() {
                methods.push(verb.clone());
            }
        }
        // The usual order of an `Allow` header, custom verbs after, by name.
        let usual = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        methods.sort_by_key(|verb| {
            let rank = usual.iter().position(|known| known == verb);
            (rank.unwrap_or(usual.len()), verb.as_str().to_owned())
        });
        methods
    }

    /// Every route: (HTTP method, template, where it goes).
    pub fn routes(&self) -> impl Iterator<Item = (&Method, &super::Template, &RestRoute)> {
        self.routes.iter()
    }

    /// Routes left out, and why.
    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }
}
