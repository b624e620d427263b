/// The raw values the head sources found (`IdentityResolver.headSources`), in source order, read on
/// the event loop. The first is kept inline, so the usual single header source costs no allocation
/// per request.
public struct IdentityHeadValues: Sendable, Equatable, ExpressibleByArrayLiteral {
    private var first: String?
    private var rest: [String?] = []

    public init(arrayLiteral values: String?...) {
        first = values.first ?? nil
        rest = Array(values.dropFirst())
    }

    /// Reads each of `sources` from a request head.
    public init(reading sources: [IdentitySource], header: (String) -> String?, target: String) {
        guard let head = sources.first else { return }
        first = IdentityHeadReader.read(head, header: header, target: target)
        if sources.count > 1 {
            rest = sources.dropFirst().map { IdentityHeadReader.read($0, header: header, target: target) }
        }
    }

    /// The value of the `index`th head source; nil when it found none (or there is no such source).
    public subscript(index: Int) -> String? {
        index == 0 ? first : (index - 1 < rest.count ? rest[index - 1] : nil)
    }
}
