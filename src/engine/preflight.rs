//! Terraform's own refusals that need no terraform run, made before the
//! database is opened: a directory with no configuration files, `-var`
//! values that are malformed or name a variable the root module does not
//! declare, required variables with no value. stategraph refuses them in
//! terraform's words and with its exit code (1) even when it would run no
//! terraform at all (a plan whose discovery finds nothing to change).
//!
//! Where the configuration cannot be read here (JSON configuration, a file
//! that does not parse, a missing `-var-file`), terraform's own run says
//! what is wrong.

use anyhow::{bail, Result};

use super::Kind;
use crate::settings::Settings;
use crate::terraform::config::{self, Inputs};
use crate::tfargs::TfFlags;

/// Refuses what terraform would refuse before planning.
pub fn check(settings: &Settings, kind: Kind, flags: &TfFlags) -> Result<()> {
    let root = &settings.workdir;
    if !flags.destroy && !config::has_configuration(root) {
        match kind {
            Kind::Plan => bail!(
                "No configuration files\n\n\
                 Plan requires configuration to be present. Planning without a configuration \
                 would mark everything for destruction, which is normally not what is desired. \
                 If you would like to destroy everything, run plan with the -destroy option. \
                 Otherwise, create a Terraform configuration file (.tf file) and try again."
            ),
            _ => bail!(
                "No configuration files\n\n\
                 Apply requires configuration to be present. Applying without a configuration \
                 would mark everything for destruction, which is normally not what is desired. \
                 If you would like to destroy everything, run 'stategraph destroy' instead."
            ),
        }
    }
    let mut assigned: Vec<&str> = Vec::new();
    for kv in flags.vars.iter().filter_map(|v| v.strip_prefix("-var=")) {
        match kv.split_once('=') {
            Some((name, _)) => assigned.push(name.trim()),
            None => bail!(
                "Invalid -var option\n\n\
                 The given -var option {kv:?} is not correctly specified. Must be a variable \
                 name and value separated by an equals sign, like -var=\"key=value\"."
            ),
        }
    }
    let inputs = Inputs {
        vars: flags.vars.clone(),
        env: settings.tf_vars.clone(),
        ..Inputs::default()
    };
    let Ok(variables) = config::root_variables(root, &inputs) else {
        return Ok(());
    };
    if let Some(name) = assigned
        .iter()
        .find(|n| !variables.declared.contains_key(**n))
    {
        bail!(
            "Value for undeclared variable\n\n\
             A variable named {name:?} was assigned on the command line, but the root module \
             does not declare a variable of that name. To use this value, add a \"variable\" \
             block to the configuration."
        );
    }
    let unset = variables
        .declared
        .iter()
        .find(|(name, has_default)| !**has_default && !variables.given.contains(*name));
    if let Some((name, _)) = unset {
        bail!(
            "No value for required variable\n\n\
             The root module input variable {name:?} is not set, and has no default value. Use \
             a -var or -var-file command line argument to provide a value for this variable."
        );
    }
    Ok(())
}
