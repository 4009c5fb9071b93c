//! PLACEHOLDER: being written.
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::name::UnitName;
use crate::unit_file::UnitFile;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {}

impl ContainerSpec {
    pub fn from_unit_file(_name: &UnitName, _file: &UnitFile, _diags: &mut Diagnostics) -> Option<Self> {
        None
    }
}
