//! [`Routes`]: the route table of the JSON API and the operations endpoints. axum's
//! `Router` does not list its routes, so every area registers its routes here with the
//! method spelled out (`.get(path, handler)`), and the table of (method, path) is kept
//! beside the router it builds. `app` routes exactly this table, and the OpenAPI
//! document is checked against it (`openapi.rs`): a route added here without a
//! `#[utoipa::path]` in the document fails that test.

use axum::{
    Router,
    handler::Handler,
    routing::{MethodRouter, delete, get, post, put},
};

use super::AppState;

/// An HTTP method the API routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// The name as OpenAPI's path items spell it.
    pub fn openapi_name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// A router and the (method, path) of every route in it.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, String)>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes { router: Router::new(), table: Vec::new() }
    }

    fn add(mut self, method: Method, path: &str, route: MethodRouter<AppState>) -> Routes {
        // axum merges the methods of one path across `route` calls.
        self.router = self.router.route(path, route);
        self.table.push((method, path.to_string()));
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.add(Method::Get, path, get(handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.add(Method::Post, path, post(handler))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.add(Method::Put, path, put(handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.add(Method::Delete, path, delete(handler))
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// `inner`'s routes under `prefix`, its router passed through `wrap` (for layers that
    /// apply to it alone).
    pub fn nest(
        mut self,
        prefix: &str,
        inner: Routes,
        wrap: impl FnOnce(Router<AppState>) -> Router<AppState>,
    ) -> Routes {
        self.router = self.router.nest(prefix, wrap(inner.router));
        self.table.extend(inner.table.into_iter().map(|(m, p)| (m, format!("{prefix}{p}"))));
        self
    }

    /// Every (method, path), sorted.
    pub fn table(&self) -> Vec<(Method, String)> {
        let mut table = self.table.clone();
        table.sort();
        table
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
