//! PLACEHOLDER: being written.
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::name::UnitName;
use crate::unit_file::UnitFile;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOptions {}

impl FleetOptions {
    pub fn from_unit_file(_name: &UnitName, _file: &UnitFile, _diags: &mut Diagnostics) -> Self {
        FleetOptions {}
    }
}
