use crate::translation_standins as _;
