//! Local store placeholder.
