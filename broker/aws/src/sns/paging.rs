//! SNS's paged lists: 100 items a page, in a stable order, the next page
//! named by a `NextToken` (here the last item of the page before).

/// Most items one list answers, as in SNS.
pub const PAGE: usize = 100;

/// The page of `items` (sorted) after `after`, and the item that names
/// the next page when more remain.
pub fn page<T: Ord + Clone>(items: Vec<T>, after: Option<&T>) -> (Vec<T>, Option<T>) {
    let mut rest = items
        .into_iter()
        .filter(|item| after.is_none_or(|after| item > after));
    let page: Vec<T> = rest.by_ref().take(PAGE).collect();
    let next = match page.last() {
        Some(last) if rest.next().is_some() => Some(last.clone()),
        _ => None,
    };
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_token() {
        let items: Vec<u32> = (0..250).collect();
        let (first, next) = page(items.clone(), None);
        assert_eq!((first.len(), next), (100, Some(99)));
        let (second, next) = page(items.clone(), next.as_ref());
        assert_eq!((second[0], second.len(), next), (100, 100, Some(199)));
        let (third, next) = page(items.clone(), next.as_ref());
        assert_eq!((third.len(), next), (50, None));
        let (exact, next) = page((0..100).collect::<Vec<u32>>(), None);
        assert_eq!((exact.len(), next), (100, None));
    }
}
