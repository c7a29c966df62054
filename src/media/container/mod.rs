pub mod ivf;
pub mod ogg;
