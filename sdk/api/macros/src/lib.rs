//! `#[method_specs]`: reads a jsonrpsee `#[rpc(...)]` trait and emits, next to it, a
//! `SPECS: &[MethodSpec]` table with each method's full name, docs, params and result type.
//!
//! Put it *above* `#[rpc(...)]`: outer attributes expand first, so this macro sees the trait
//! exactly as written and hands it on unchanged. The API is then declared once, and the
//! OpenRPC document and the server's params check cannot drift from the handlers.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, ItemTrait, Lit, LitStr, Pat, PathArguments,
    ReturnType, TraitItem, Type, parse_macro_input,
};

/// See the crate documentation.
#[proc_macro_attribute]
pub fn method_specs(args: TokenStream, input: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[method_specs] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let item = parse_macro_input!(input as ItemTrait);
    match expand(&item) {
        Ok(specs) => quote! { #item #specs }.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn lit_str(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

fn rpc_namespace(item: &ItemTrait) -> syn::Result<(String, String)> {
    let attr = item
        .attrs
        .iter()
        .find(|a| a.path().segments.last().is_some_and(|s| s.ident == "rpc"))
        .ok_or_else(|| syn::Error::new_spanned(&item.ident, "expected #[rpc(...)] below"))?;
    let mut namespace = None;
    let mut separator = "_".to_owned();
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("namespace") {
            namespace = Some(meta.value()?.parse::<LitStr>()?.value());
        } else if meta.path.is_ident("namespace_separator") {
            separator = meta.value()?.parse::<LitStr>()?.value();
        } else if meta.input.peek(syn::Token![=]) {
            let _: Expr = meta.value()?.parse()?;
        }
        Ok(())
    })?;
    let namespace =
        namespace.ok_or_else(|| syn::Error::new_spanned(attr, "#[rpc] needs a namespace"))?;
    Ok((namespace, separator))
}

fn docs(attrs: &[Attribute]) -> String {
    let mut out = String::new();
    for attr in attrs {
        if attr.path().is_ident("doc")
            && let syn::Meta::NameValue(nv) = &attr.meta
            && let Some(line) = lit_str(&nv.value)
        {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

struct Declared {
    name: String,
    unsubscribe: Option<String>,
    item: Option<Type>,
}

fn declared(attrs: &[Attribute]) -> syn::Result<Option<Declared>> {
    for attr in attrs {
        let is_method = attr.path().is_ident("method");
        let is_sub = attr.path().is_ident("subscription");
        if !is_method && !is_sub {
            continue;
        }
        let mut d = Declared {
            name: String::new(),
            unsubscribe: None,
            item: None,
        };
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                d.name = meta.value()?.parse::<LitStr>()?.value();
                if meta.input.peek(syn::Token![=>]) {
                    return Err(meta.error("custom notification names are not supported here"));
                }
            } else if meta.path.is_ident("unsubscribe") {
                d.unsubscribe = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("item") {
                d.item = Some(meta.value()?.parse::<Type>()?);
            } else if meta.input.peek(syn::Token![=]) {
                let _: Expr = meta.value()?.parse()?;
            }
            Ok(())
        })?;
        if is_sub && (d.unsubscribe.is_none() || d.item.is_none()) {
            return Err(syn::Error::new_spanned(
                attr,
                "a subscription needs unsubscribe = \"...\" and item = Type",
            ));
        }
        return Ok(Some(d));
    }
    Ok(None)
}

/// `RpcResult<T>` → `T`.
fn result_type(ret: &ReturnType) -> syn::Result<Type> {
    if let ReturnType::Type(_, ty) = ret
        && let Type::Path(p) = &**ty
        && let Some(last) = p.path.segments.last()
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(t)) = args.args.first()
    {
        return Ok(t.clone());
    }
    Err(syn::Error::new_spanned(ret, "expected RpcResult<T>"))
}

fn expand(item: &ItemTrait) -> syn::Result<TokenStream2> {
    let (namespace, separator) = rpc_namespace(item)?;
    let mut specs = Vec::new();
    for trait_item in &item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        let Some(d) = declared(&f.attrs)? else {
            continue;
        };
        let full = format!("{namespace}{separator}{}", d.name);
        let doc = docs(&f.attrs);
        if doc.trim().is_empty() {
            return Err(syn::Error::new_spanned(
                &f.sig.ident,
                "every API method needs a doc comment",
            ));
        }
        let mut params = Vec::new();
        for input in &f.sig.inputs {
            let FnArg::Typed(arg) = input else { continue };
            let Pat::Ident(pat) = &*arg.pat else {
                return Err(syn::Error::new_spanned(
                    &arg.pat,
                    "params must be plain names",
                ));
            };
            let name = pat.ident.to_string();
            let ty = &arg.ty;
            params.push(quote! {
                crate::spec::ParamSpec {
                    name: #name,
                    schema: crate::spec::schema_of::<#ty>,
                    check: crate::spec::check_as::<#ty>,
                }
            });
        }
        let (kind, result) = match (&d.unsubscribe, &d.item) {
            (Some(unsub), Some(item_ty)) => {
                let unsub = format!("{namespace}{separator}{unsub}");
                (
                    quote! { crate::spec::MethodKind::Subscription { notification: #full, unsubscribe: #unsub } },
                    item_ty.clone(),
                )
            }
            _ => (
                quote! { crate::spec::MethodKind::Call },
                result_type(&f.sig.output)?,
            ),
        };
        specs.push(quote! {
            crate::spec::MethodSpec {
                name: #full,
                kind: #kind,
                doc: #doc,
                params: &[#(#params),*],
                result: crate::spec::schema_of::<#result>,
            }
        });
    }
    Ok(quote! {
        /// Every method of this namespace, for OpenRPC and the server's params check.
        pub const SPECS: &[crate::spec::MethodSpec] = &[#(#specs),*];
    })
}
