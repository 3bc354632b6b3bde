//! Concept frequencies: lexicons ([`lexicon`]), counting methods and co-occurrence ([`count`]),
//! lookups of the forms that occur in an index ([`lookup`]), and the tables they write ([`tables`]).

pub mod count;
pub mod lexicon;
pub mod lookup;
pub mod tables;
