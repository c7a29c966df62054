//! Unit tests of the media modules that live outside the module they test.

pub(super) mod h264;
