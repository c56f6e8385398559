//! Catalogs (CAT-*): service tags, FQDN tags and outbound dependency lists, loaded as data.
