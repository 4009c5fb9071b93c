//! `Environment=NAME` in `[Container]`: the container gets the service's own
//! variable, which is the shim's environment (the shim is the service's
//! main process), as podman's `--env NAME` in Quadlet's `ExecStart=` does.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use flotilla_agent::container::config::read_environment_files;
use flotilla_proto::{UnitName, UnitSpec};

#[test]
fn a_bare_name_takes_the_services_variable_when_it_is_set() {
    let name = UnitName::parse("web.service").unwrap();
    // PATH is set in every test process; the other name in none.
    let text = "[Container]\nImage=nginx\nEnvironment=PATH FLOTILLA_SURELY_UNSET_7F3A\n";
    let (spec, diagnostics) = UnitSpec::read(&name, text);
    let spec = spec.unwrap_or_else(|| panic!("{diagnostics:?}"));
    let env = read_environment_files(spec.container.as_ref().unwrap()).unwrap();
    assert_eq!(env, [format!("PATH={}", std::env::var("PATH").unwrap())]);
}
