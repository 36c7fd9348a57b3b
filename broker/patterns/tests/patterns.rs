//! The pattern language against AWS's documented examples, the compiled
//! matcher against the reference interpreter on random patterns and
//! events, and refused patterns naming their path and reason.

mod patterns {
    mod agreement;
    mod errors;
    mod table;
}
