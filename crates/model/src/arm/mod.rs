//! ARM deployment templates (FMT-4, FMT-5): expressions, parameters, variables, copy loops,
//! conditions and nested deployments, expanded to plain resources before import.
