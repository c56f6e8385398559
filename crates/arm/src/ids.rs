//! Resource ids, deterministic hashes and the placeholder objects that stand for the deployment
//! target (`resourceGroup()`, `subscription()`, `deployment()`, `environment()`).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::scope::Env;

/// Tenant placeholder used by `subscription()` and `tenant()`.
const TENANT_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Why `*ResourceId()` arguments do not make a resource id. `func` is the function as written in
/// messages (`resourceId`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdError {
    #[error("{func}() needs a resource type such as 'Microsoft.Network/virtualNetworks'")]
    NoResourceType { func: &'static str },
    #[error(
        "{func}() takes at most {max} scope argument(s) before the resource type; found {found}"
    )]
    TooManyScopes {
        func: &'static str,
        max: usize,
        found: usize,
    },
    #[error("{func}() needs at least one resource name after the type")]
    NoName { func: &'static str },
    #[error("{func}(): '{type_name}' is not a resource type")]
    NotAType {
        func: &'static str,
        type_name: String,
    },
    #[error(
        "{func}(): type '{type_name}' needs {wanted} name segment(s), {given} given ({names})"
    )]
    NameCount {
        func: &'static str,
        type_name: String,
        wanted: usize,
        given: usize,
        names: String,
    },
    #[error("extensionResourceId() needs the id of the extended resource")]
    NoExtendedId,
}

/// Where the resource-type argument of a `*ResourceId()` call may sit, after the optional
/// scope arguments.
struct IdArgs<'a> {
    scope: &'a [String],
    type_name: &'a str,
    names: Vec<&'a str>,
}

/// Splits `resourceId`-style arguments: the resource type is the first argument containing a
/// `/`, at most `max_scope` arguments before it are scope values (subscription, group), the
/// rest are names (a name holding `/` counts as several segments).
fn split_args<'a>(
    func: &'static str,
    args: &'a [String],
    max_scope: usize,
) -> Result<IdArgs<'a>, IdError> {
    let pos = args
        .iter()
        .position(|a| a.contains('/'))
        .ok_or(IdError::NoResourceType { func })?;
    if pos > max_scope {
        return Err(IdError::TooManyScopes {
            func,
            max: max_scope,
            found: pos,
        });
    }
    let names: Vec<&str> = args[pos + 1..].iter().flat_map(|n| n.split('/')).collect();
    if names.is_empty() {
        return Err(IdError::NoName { func });
    }
    Ok(IdArgs {
        scope: &args[..pos],
        type_name: &args[pos],
        names,
    })
}

/// `providers/{namespace}/{type1}/{name1}/{type2}/{name2}...`
fn provider_path(func: &'static str, type_name: &str, names: &[&str]) -> Result<String, IdError> {
    // ARM accepts a trailing slash ('Microsoft.Network/virtualNetworks/'), common in templates.
    let mut segments = type_name.trim_end_matches('/').split('/');
    let namespace = segments.next().unwrap_or_default();
    let types: Vec<&str> = segments.collect();
    if namespace.is_empty() || types.iter().any(|t| t.is_empty()) {
        return Err(IdError::NotAType {
            func,
            type_name: type_name.to_string(),
        });
    }
    if types.len() != names.len() {
        return Err(IdError::NameCount {
            func,
            type_name: type_name.to_string(),
            wanted: types.len(),
            given: names.len(),
            names: names.join("/"),
        });
    }
    let mut path = format!("providers/{namespace}");
    for (t, n) in types.iter().zip(names) {
        path.push('/');
        path.push_str(t);
        path.push('/');
        path.push_str(n);
    }
    Ok(path)
}

/// `resourceId([subscriptionId], [resourceGroupName], type, name1, [name2], ...)`.
pub(crate) fn resource_id(env: &Env, args: &[String]) -> Result<String, IdError> {
    let a = split_args("resourceId", args, 2)?;
    let (sub, rg) = match a.scope {
        [] => (env.subscription_id.as_str(), env.resource_group.as_str()),
        [rg] => (env.subscription_id.as_str(), rg.as_str()),
        [sub, rg, ..] => (sub.as_str(), rg.as_str()),
    };
    let path = provider_path("resourceId", a.type_name, &a.names)?;
    Ok(format!("/subscriptions/{sub}/resourceGroups/{rg}/{path}"))
}

/// `subscriptionResourceId([subscriptionId], type, name1, ...)`.
pub(crate) fn subscription_resource_id(env: &Env, args: &[String]) -> Result<String, IdError> {
    let a = split_args("subscriptionResourceId", args, 1)?;
    let sub = a
        .scope
        .first()
        .map(String::as_str)
        .unwrap_or(&env.subscription_id);
    let path = provider_path("subscriptionResourceId", a.type_name, &a.names)?;
    Ok(format!("/subscriptions/{sub}/{path}"))
}

/// `tenantResourceId(type, name1, ...)`.
pub(crate) fn tenant_resource_id(args: &[String]) -> Result<String, IdError> {
    let a = split_args("tenantResourceId", args, 0)?;
    Ok(format!(
        "/{}",
        provider_path("tenantResourceId", a.type_name, &a.names)?
    ))
}

/// `managementGroupResourceId([managementGroupId], type, name1, ...)`.
pub(crate) fn management_group_resource_id(env: &Env, args: &[String]) -> Result<String, IdError> {
    let a = split_args("managementGroupResourceId", args, 1)?;
    let group = a
        .scope
        .first()
        .map(String::as_str)
        .unwrap_or(&env.management_group);
    let path = provider_path("managementGroupResourceId", a.type_name, &a.names)?;
    Ok(format!(
        "/providers/Microsoft.Management/managementGroups/{group}/{path}"
    ))
}

/// `extensionResourceId(resourceId, type, name1, ...)`.
pub(crate) fn extension_resource_id(args: &[String]) -> Result<String, IdError> {
    let Some((base, rest)) = args.split_first() else {
        return Err(IdError::NoExtendedId);
    };
    let a = split_args("extensionResourceId", rest, 0)?;
    let path = provider_path("extensionResourceId", a.type_name, &a.names)?;
    Ok(format!("{}/{path}", base.trim_end_matches('/')))
}

fn digest(parts: &[String], salt: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// `uniqueString(...)`: 13 characters of a base-32 hash of the arguments. Deterministic but not
/// ARM's own hash (which is unpublished); names built from it are stable between runs.
pub(crate) fn unique_string(parts: &[String]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let d = digest(parts, "uniqueString");
    let mut n = u128::from_be_bytes(d[..16].try_into().unwrap_or([0; 16]));
    let mut out = String::with_capacity(13);
    for _ in 0..13 {
        out.push(char::from(ALPHABET[(n & 31) as usize]));
        n >>= 5;
    }
    out
}

/// `guid(...)`: a version-5-shaped UUID from a hash of the arguments.
pub(crate) fn guid(parts: &[String]) -> String {
    let d = digest(parts, "guid");
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub(crate) fn resource_group(env: &Env) -> Value {
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}", env.subscription_id, env.resource_group),
        "name": env.resource_group,
        "type": "Microsoft.Resources/resourceGroups",
        "location": env.location,
        "tags": {},
        "properties": {"provisioningState": "Succeeded"},
    })
}

pub(crate) fn subscription(env: &Env) -> Value {
    json!({
        "id": format!("/subscriptions/{}", env.subscription_id),
        "subscriptionId": env.subscription_id,
        "tenantId": TENANT_ID,
        "displayName": "palisade-subscription",
    })
}

pub(crate) fn tenant() -> Value {
    json!({
        "tenantId": TENANT_ID,
        "countryCode": "US",
        "displayName": "palisade-tenant",
    })
}

/// `deployment()`: the template is not deployed from a URI, so `templateLink.uri` is empty.
pub(crate) fn deployment(env: &Env) -> Value {
    json!({
        "name": env.deployment_name,
        "location": env.location,
        "properties": {
            "templateLink": {"uri": "", "contentVersion": "1.0.0.0"},
            "template": {"contentVersion": "1.0.0.0"},
            "parameters": {},
            "mode": "Incremental",
            "provisioningState": "Accepted",
        },
    })
}

/// `environment()`: the public Azure cloud.
pub(crate) fn environment() -> Value {
    json!({
        "name": "AzureCloud",
        "gallery": "https://gallery.azure.com/",
        "graph": "https://graph.windows.net/",
        "portal": "https://portal.azure.com",
        "graphAudience": "https://graph.windows.net/",
        "activeDirectoryDataLake": "https://datalake.azure.net/",
        "batch": "https://batch.core.windows.net/",
        "media": "https://rest.media.azure.net",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/quickstart-templates/aliases.json",
        "resourceManager": "https://management.azure.com/",
        "authentication": {
            "loginEndpoint": "https://login.microsoftonline.com/",
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {
            "acrLoginServer": ".azurecr.io",
            "azureDatalakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
            "azureDatalakeStoreFileSystem": "azuredatalakestore.net",
            "azureFrontDoorEndpointSuffix": "azurefd.net",
            "keyvaultDns": ".vault.azure.net",
            "sqlServerHostname": ".database.windows.net",
            "storage": "core.windows.net",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            location: "eastus".into(),
            deployment_name: "dep".into(),
            management_group: "mg".into(),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fmt_4_resource_id_forms() {
        let e = env();
        assert_eq!(
            resource_id(&e, &s(&["Microsoft.Network/virtualNetworks", "vnet"])).unwrap(),
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet"
        );
        assert_eq!(
            resource_id(&e, &s(&["other", "Microsoft.Network/virtualNetworks/subnets", "v", "s"]))
                .unwrap(),
            "/subscriptions/sub/resourceGroups/other/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
        );
        assert_eq!(
            resource_id(&e, &s(&["s2", "g2", "Microsoft.Network/virtualNetworks/subnets", "v/s"]))
                .unwrap(),
            "/subscriptions/s2/resourceGroups/g2/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
        );
        assert!(resource_id(&e, &s(&["Microsoft.Network/virtualNetworks/subnets", "v"])).is_err());
        assert!(resource_id(&e, &s(&["a", "b", "c", "X/y", "n"])).is_err());
        assert!(resource_id(&e, &s(&["nothing"])).is_err());
        assert!(resource_id(&e, &s(&["Microsoft.Network/virtualNetworks"])).is_err());
        assert!(resource_id(&e, &s(&["/x", "n"])).is_err());
        assert_eq!(
            resource_id(&e, &s(&["Microsoft.Network/virtualNetworks/", "vnet"])).unwrap(),
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet"
        );
    }

    #[test]
    fn fmt_4_other_resource_id_scopes() {
        let e = env();
        assert_eq!(
            subscription_resource_id(&e, &s(&["Microsoft.Resources/resourceGroups", "g"])).unwrap(),
            "/subscriptions/sub/providers/Microsoft.Resources/resourceGroups/g"
        );
        assert_eq!(
            tenant_resource_id(&s(&["Microsoft.Billing/x", "n"])).unwrap(),
            "/providers/Microsoft.Billing/x/n"
        );
        assert_eq!(
            extension_resource_id(&s(&[
                "/subscriptions/sub/x",
                "Microsoft.Authorization/locks",
                "l"
            ]))
            .unwrap(),
            "/subscriptions/sub/x/providers/Microsoft.Authorization/locks/l"
        );
        assert_eq!(
            management_group_resource_id(&e, &s(&["Microsoft.Authorization/policyDefinitions", "p"]))
                .unwrap(),
            "/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization/policyDefinitions/p"
        );
        assert!(extension_resource_id(&[]).is_err());
    }

    #[test]
    fn fmt_4_hashes_are_deterministic() {
        let a = unique_string(&s(&["x", "y"]));
        assert_eq!(a.len(), 13);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(a, unique_string(&s(&["x", "y"])));
        assert_ne!(a, unique_string(&s(&["xy"])));
        let g = guid(&s(&["x"]));
        assert_eq!(g.len(), 36);
        assert_eq!(g, guid(&s(&["x"])));
        assert_eq!(&g[14..15], "5");
    }
}
