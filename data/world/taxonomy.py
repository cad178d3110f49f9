"""Pure vocabulary for the simulated search portal: genres, editorial angles and topical domains.

In: nothing (constants only). Out: ``GENRES``, ``GENRE_QUERY_WORDS``, ``GENRE_LABELS``, ``ANGLES`` and
``DOMAINS``, which the generators combine into realistic English doc bodies, smart-block titles and user
queries. ``check_taxonomy()`` validates every structural rule and raises ``ValueError`` naming the domain and
field that broke it.
"""

from dataclasses import dataclass
from typing import NoReturn

GENRES: tuple[str, ...] = ("blog", "news", "video", "shopping", "place", "qna")

# How a user types each genre inside a query.
GENRE_QUERY_WORDS: dict[str, tuple[str, ...]] = {
    "blog": ("blog", "blogs", "blog post", "post"),
    "news": ("news", "latest news", "headlines"),
    "video": ("videos", "video", "vlog"),
    "shopping": ("buy", "shop", "for sale", "shopping"),
    "place": ("near me", "map", "location", "places"),
    "qna": ("questions", "answers", "qna"),
}

# How a block title names each genre.
GENRE_LABELS: dict[str, str] = {
    "blog": "blog posts",
    "news": "news",
    "video": "videos",
    "shopping": "shopping",
    "place": "places on the map",
    "qna": "questions and answers",
}

# Editorial angles that distinguish several blocks serving one intent.
ANGLES: tuple[str, ...] = (
    "local favorites",
    "for beginners",
    "on a budget",
    "expert picks",
    "this week",
    "what to know",
    "hidden gems",
    "most popular",
    "trending now",
    "step by step",
    "quick guide",
    "deep dive",
    "lessons learned",
    "real experiences",
    "top rated",
    "latest updates",
    "for families",
    "for seniors",
    "for students",
    "weekend plans",
    "myths and facts",
    "before you start",
    "from the community",
    "side by side",
    "in ten minutes",
    "all season",
    "year in review",
    "at a glance",
    "frequently asked",
    "tried and tested",
    "worth the price",
    "premium picks",
    "easy wins",
    "beyond the basics",
    "classic choices",
    "fresh takes",
    "staff favorites",
    "seasonal picks",
    "pro tips",
    "first impressions",
)


@dataclass(frozen=True)
class Domain:
    """One topical area: its entities, the facets users ask about, and text material for docs."""

    name: str
    hint: str
    entities: tuple[str, ...]
    facets: tuple[str, ...]
    facet_words: dict[str, tuple[str, ...]]
    facet_aliases: dict[str, tuple[str, ...]]
    specials: tuple[tuple[str, str, str], ...]
    sentences: tuple[str, ...]


TRAVEL = Domain(
    name="travel",
    hint="travel",
    entities=(
        "jeju island",
        "seoul",
        "busan",
        "tokyo",
        "bangkok",
        "paris",
        "osaka",
        "kyoto",
        "london",
        "new york",
        "rome",
        "barcelona",
        "singapore",
        "hong kong",
        "taipei",
        "bali",
        "hanoi",
        "da nang",
        "sydney",
        "istanbul",
        "los angeles",
        "san francisco",
        "amsterdam",
        "prague",
        "vienna",
        "dubai",
        "cebu",
        "phuket",
        "gyeongju",
        "jeonju",
        "gangneung",
        "sokcho",
        "fukuoka",
        "sapporo",
        "okinawa",
        "hawaii",
        "guam",
        "saipan",
        "vancouver",
        "lisbon",
    ),
    facets=(
        "indoor attractions",
        "restaurants",
        "rainy day",
        "with kids",
        "hotels",
        "transportation",
        "itinerary",
        "festivals",
    ),
    facet_words={
        "indoor attractions": ("museum", "aquarium", "gallery", "exhibition", "arcade", "mall", "theater"),
        "restaurants": ("seafood", "noodles", "barbecue", "brunch", "cafe", "dessert", "menu"),
        "rainy day": ("umbrella", "cafe", "museum", "spa", "bookstore", "cinema", "indoor"),
        "with kids": ("playground", "zoo", "aquarium", "stroller", "family", "theme", "park"),
        "hotels": ("resort", "hostel", "suite", "breakfast", "pool", "lobby", "view"),
        "transportation": ("subway", "bus", "taxi", "train", "ferry", "airport", "fare", "pass"),
        "itinerary": ("day", "route", "schedule", "morning", "evening", "walking", "highlights"),
        "festivals": ("lanterns", "fireworks", "parade", "concert", "blossoms", "lights", "tradition"),
    },
    facet_aliases={
        "indoor attractions": ("indoor activities", "things to do indoors"),
        "restaurants": ("places to eat", "food spots"),
        "rainy day": ("rainy day activities", "what to do when it rains"),
        "with kids": ("family trip", "kid friendly"),
        "hotels": ("where to stay", "accommodation"),
        "transportation": ("getting around", "public transport"),
        "itinerary": ("trip plan", "travel course"),
        "festivals": ("events", "local festivals"),
    },
    specials=(
        ("seoul subway fare", "seoul", "transportation"),
        ("jeju island black pork", "jeju island", "restaurants"),
        ("tokyo disneyland", "tokyo", "with kids"),
        ("bangkok songkran", "bangkok", "festivals"),
        ("louvre museum hours", "paris", "indoor attractions"),
        ("haeundae beach hotels", "busan", "hotels"),
    ),
    sentences=(
        "Many visitors to {entity} say the {facet} options are worth the trip, especially for {word}.",
        "If {facet} is on your list for {entity}, it helps to plan around {word}.",
        "Locals in {entity} often recommend thinking about {word} when it comes to {facet}.",
        "Our {entity} notes on {facet} were updated after another visit focused on {word}.",
        "The best part of {facet} in {entity} was honestly the {word}.",
        "Travelers searching for {entity} {facet} usually end up comparing {word} options.",
        "{entity} has changed a lot in recent years, and {facet} is no exception.",
        "We spent a whole afternoon on {facet} in {entity} and still wanted more {word}.",
        "A quick tip for {entity}: check the {word} before you decide on {facet}.",
        "Prices for {word} in {entity} can vary by season, so compare before booking.",
    ),
)

FOOD = Domain(
    name="food",
    hint="recipe",
    entities=(
        "galbi jjim",
        "kimchi stew",
        "bibimbap",
        "ramen",
        "pad thai",
        "bulgogi",
        "tteokbokki",
        "japchae",
        "samgyeopsal",
        "naengmyeon",
        "sundubu jjigae",
        "kimbap",
        "doenjang jjigae",
        "samgyetang",
        "dakgalbi",
        "pho",
        "sushi",
        "carbonara",
        "lasagna",
        "tacos",
        "butter chicken",
        "chicken curry",
        "fried rice",
        "dumplings",
        "beef stew",
        "caesar salad",
        "banana bread",
        "cheesecake",
        "pancakes",
        "french toast",
        "tom yum soup",
        "paella",
        "risotto",
        "shakshuka",
        "hummus",
        "falafel",
        "udon",
        "katsu curry",
        "mapo tofu",
        "fish and chips",
    ),
    facets=(
        "recipe",
        "calories",
        "restaurants",
        "history",
        "vegetarian version",
        "ingredients",
        "meal prep",
        "pairings",
    ),
    facet_words={
        "recipe": ("simmer", "chop", "marinate", "boil", "stir", "season", "serve"),
        "calories": ("protein", "carbs", "fat", "portion", "sodium", "serving", "nutrition"),
        "restaurants": ("menu", "reservation", "chef", "takeout", "delivery", "local", "popular"),
        "history": ("origin", "dynasty", "tradition", "region", "century", "royal", "street"),
        "vegetarian version": ("tofu", "mushroom", "vegetables", "vegan", "plant", "beans", "seitan"),
        "ingredients": ("garlic", "onion", "soy", "sesame", "pepper", "ginger", "broth", "chili"),
        "meal prep": ("containers", "batch", "freezer", "reheat", "lunch", "storage", "weekly"),
        "pairings": ("wine", "beer", "side", "kimchi", "pickles", "rice", "soju", "salad"),
    },
    facet_aliases={
        "recipe": ("how to make", "easy recipe"),
        "calories": ("nutrition facts", "kcal"),
        "restaurants": ("where to eat", "best places"),
        "history": ("origin", "where it comes from"),
        "vegetarian version": ("vegan", "meatless"),
        "ingredients": ("what you need", "shopping list"),
        "meal prep": ("make ahead", "batch cooking"),
        "pairings": ("what to serve with", "side dishes"),
    },
    specials=(
        ("kimchi stew with tuna", "kimchi stew", "recipe"),
        ("how many calories in bibimbap", "bibimbap", "calories"),
        ("tofu pad thai", "pad thai", "vegetarian version"),
        ("what wine goes with carbonara", "carbonara", "pairings"),
        ("gochujang for tteokbokki", "tteokbokki", "ingredients"),
        ("origin of galbi jjim", "galbi jjim", "history"),
    ),
    sentences=(
        "A good {entity} starts with {word}, and the {facet} makes all the difference.",
        "Our family has made {entity} for years, and {facet} questions always come up around {word}.",
        "If you are curious about {entity} {facet}, pay attention to the {word}.",
        "Most people underestimate how much {word} matters for {entity}.",
        "This {entity} guide covers {facet} in plain language, with notes on {word}.",
        "Home cooks often ask about {facet} when they first try {entity}.",
        "The secret to a better {entity} is simple: more attention to {word}.",
        "We compared several takes on {entity} and the {facet} varied more than expected.",
        "Try {entity} with a little extra {word} and see how it changes the flavor.",
    ),
)

TECH = Domain(
    name="tech",
    hint="review",
    entities=(
        "iphone 16",
        "galaxy s25",
        "macbook air",
        "ipad pro",
        "airpods pro",
        "galaxy tab s10",
        "pixel 9",
        "apple watch series 10",
        "galaxy watch 7",
        "galaxy buds 3",
        "sony wh-1000xm5",
        "nintendo switch",
        "playstation 5",
        "xbox series x",
        "steam deck",
        "macbook pro",
        "dell xps 13",
        "surface pro",
        "thinkpad x1 carbon",
        "lg gram",
        "kindle paperwhite",
        "meta quest 3",
        "gopro hero 12",
        "dji mini 4 pro",
        "iphone 15",
        "galaxy z flip 6",
        "galaxy z fold 6",
        "pixel buds pro",
        "bose quietcomfort ultra",
        "apple vision pro",
        "asus rog ally",
        "ipad air",
        "mac mini",
        "imac",
        "logitech mx master 3s",
        "galaxy a55",
        "oneplus 12",
        "xiaomi 14",
        "garmin forerunner 265",
        "sony a7 iv",
    ),
    facets=(
        "battery life",
        "price",
        "specs",
        "setup",
        "accessories",
        "common problems",
        "deals",
        "tips and tricks",
    ),
    facet_words={
        "battery life": ("charging", "hours", "mah", "standby", "drain", "fast", "wireless"),
        "price": ("cost", "dollars", "storage", "model", "tier", "launch", "value"),
        "specs": ("processor", "display", "memory", "storage", "chip", "resolution", "weight"),
        "setup": ("pairing", "update", "account", "transfer", "settings", "bluetooth", "backup"),
        "accessories": ("case", "charger", "cable", "stand", "strap", "protector", "dock"),
        "common problems": ("overheating", "lag", "crash", "bug", "glitch", "freezing", "restart"),
        "deals": ("discount", "coupon", "sale", "trade", "refurbished", "bundle", "cashback"),
        "tips and tricks": ("shortcut", "gesture", "widget", "hidden", "feature", "setting", "mode"),
    },
    facet_aliases={
        "battery life": ("battery test", "battery drain"),
        "price": ("how much", "cost"),
        "specs": ("specifications", "tech specs"),
        "setup": ("how to set up", "first time setup"),
        "accessories": ("best cases", "add ons"),
        "common problems": ("issues", "not working"),
        "deals": ("discount", "sale price"),
        "tips and tricks": ("hidden features", "tips"),
    },
    specials=(
        ("iphone 16 charging speed", "iphone 16", "battery life"),
        ("galaxy s25 release price", "galaxy s25", "price"),
        ("macbook air overheating", "macbook air", "common problems"),
        ("airpods pro pairing with android", "airpods pro", "setup"),
        ("iphone 16 case", "iphone 16", "accessories"),
        ("playstation 5 black friday", "playstation 5", "deals"),
    ),
    sentences=(
        "After two weeks with the {entity}, the {facet} is what stood out most, mainly because of {word}.",
        "If you care about {word}, the {entity} is worth a closer look.",
        "Our {entity} {facet} notes focus on everyday use rather than benchmarks.",
        "Compared with last year's model, the {entity} improves on {word} but the {facet} feels similar.",
        "Many owners of the {entity} ask about {facet} in the first month.",
        "The {entity} handles {word} better than expected for its class.",
        "Before buying the {entity}, read up on {facet} and check the {word}.",
        "Support forums for the {entity} are full of threads about {word}.",
        "The short answer on {entity} {facet}: it depends on how much you rely on {word}.",
    ),
)

HEALTH = Domain(
    name="health",
    hint="health",
    entities=(
        "back pain",
        "insomnia",
        "migraine",
        "high blood pressure",
        "type 2 diabetes",
        "acid reflux",
        "eczema",
        "anxiety",
        "depression",
        "asthma",
        "seasonal allergies",
        "arthritis",
        "knee pain",
        "neck pain",
        "plantar fasciitis",
        "carpal tunnel syndrome",
        "sciatica",
        "irritable bowel syndrome",
        "high cholesterol",
        "common cold",
        "flu",
        "gout",
        "psoriasis",
        "acne",
        "hair loss",
        "dry eye",
        "tinnitus",
        "vertigo",
        "sinusitis",
        "anemia",
        "osteoporosis",
        "hypothyroidism",
        "kidney stones",
        "shingles",
        "sleep apnea",
        "fatty liver",
        "constipation",
        "tennis elbow",
        "frozen shoulder",
        "rotator cuff injury",
    ),
    facets=(
        "symptoms",
        "causes",
        "treatment",
        "exercises",
        "diet",
        "home remedies",
        "when to see a doctor",
        "prevention",
    ),
    facet_words={
        "symptoms": ("pain", "fatigue", "swelling", "stiffness", "fever", "numbness", "dizziness"),
        "causes": ("stress", "posture", "genetics", "inflammation", "infection", "lifestyle", "aging"),
        "treatment": (
            "medication",
            "therapy",
            "injection",
            "surgery",
            "physiotherapy",
            "prescription",
            "rest",
        ),
        "exercises": ("stretching", "walking", "yoga", "pilates", "strength", "breathing", "core"),
        "diet": ("vegetables", "fiber", "water", "protein", "sugar", "salt", "omega"),
        "home remedies": ("heat", "ice", "tea", "honey", "massage", "sleep", "ginger"),
        "when to see a doctor": (
            "emergency",
            "clinic",
            "specialist",
            "referral",
            "warning",
            "checkup",
            "urgent",
        ),
        "prevention": ("habits", "screening", "vaccination", "posture", "hygiene", "exercise", "routine"),
    },
    facet_aliases={
        "symptoms": ("signs", "early signs"),
        "causes": ("why it happens", "risk factors"),
        "treatment": ("how to treat", "cure"),
        "exercises": ("stretches", "workouts"),
        "diet": ("foods to eat", "foods to avoid"),
        "home remedies": ("natural remedies", "relief at home"),
        "when to see a doctor": ("is it serious", "warning signs"),
        "prevention": ("how to prevent", "reduce risk"),
    },
    specials=(
        ("lower back pain stretches", "back pain", "exercises"),
        ("why cant i fall asleep", "insomnia", "causes"),
        ("migraine aura", "migraine", "symptoms"),
        ("foods that lower blood pressure", "high blood pressure", "diet"),
        ("eczema moisturizer", "eczema", "treatment"),
    ),
    sentences=(
        "People living with {entity} often notice that {word} plays a bigger role than expected.",
        "This overview of {entity} {facet} is general information and not a substitute for medical advice.",
        "Doctors usually discuss {facet} early when a patient first reports {entity}.",
        "For many readers, managing {entity} started with small changes around {word}.",
        "If {word} gets worse or lasts more than a few weeks, talk to a professional.",
        "Research on {entity} keeps evolving, especially around {facet}.",
        "My own experience with {entity} taught me to take {facet} seriously.",
        "A common question about {entity} is whether {word} really helps.",
        "Keep a simple diary of {word} to make {facet} conversations with your doctor easier.",
    ),
)

FINANCE = Domain(
    name="finance",
    hint="explained",
    entities=(
        "index funds",
        "mortgage",
        "credit score",
        "roth ira",
        "401k",
        "etfs",
        "bitcoin",
        "ethereum",
        "high yield savings account",
        "certificates of deposit",
        "student loans",
        "credit cards",
        "personal loans",
        "home equity loan",
        "car insurance",
        "life insurance",
        "health insurance",
        "dividend stocks",
        "treasury bonds",
        "budgeting",
        "emergency fund",
        "income tax return",
        "capital gains tax",
        "real estate investing",
        "reits",
        "annuities",
        "gold investing",
        "robo advisors",
        "debt consolidation",
        "refinancing",
        "inflation",
        "interest rates",
        "pension plans",
        "estate planning",
        "health savings account",
        "money market funds",
        "day trading",
        "bankruptcy",
        "credit union",
        "payday loans",
    ),
    facets=(
        "rates",
        "tax rules",
        "pros and cons",
        "calculator",
        "how it works",
        "requirements",
        "best providers",
        "mistakes to avoid",
    ),
    facet_words={
        "rates": ("apr", "percent", "fixed", "variable", "yield", "benchmark", "federal"),
        "tax rules": ("deduction", "irs", "bracket", "withholding", "exemption", "filing", "penalty"),
        "pros and cons": ("risk", "return", "liquidity", "fees", "flexibility", "volatility", "safety"),
        "calculator": ("estimate", "monthly", "payment", "compound", "projection", "spreadsheet", "formula"),
        "how it works": ("principal", "interest", "account", "balance", "contribution", "term", "maturity"),
        "requirements": ("income", "eligibility", "documents", "minimum", "age", "approval", "limit"),
        "best providers": ("bank", "broker", "lender", "fintech", "app", "insurer", "platform"),
        "mistakes to avoid": ("overspending", "fees", "timing", "panic", "debt", "scams", "impulse"),
    },
    facet_aliases={
        "rates": ("interest rate", "current rates"),
        "tax rules": ("taxes", "tax implications"),
        "pros and cons": ("is it worth it", "advantages"),
        "calculator": ("estimator", "payment estimate"),
        "how it works": ("basics", "how does it work"),
        "requirements": ("eligibility", "do i qualify"),
        "best providers": ("where to open", "top companies"),
        "mistakes to avoid": ("common mistakes", "what not to do"),
    },
    specials=(
        ("30 year fixed mortgage rates", "mortgage", "rates"),
        ("roth ira income limit", "roth ira", "requirements"),
        ("401k early withdrawal penalty", "401k", "tax rules"),
        ("vanguard vs fidelity index funds", "index funds", "best providers"),
        ("monthly mortgage payment estimate", "mortgage", "calculator"),
    ),
    sentences=(
        "Before committing to {entity}, compare {word} across at least three options.",
        "Our guide to {entity} {facet} walks through the numbers one step at a time.",
        "Many first-time savers overlook {word} when they look into {entity}.",
        "The rules around {entity} can change yearly, so double check {facet} before acting.",
        "A financial planner would likely start the {entity} conversation with {word}.",
        "For {entity}, {facet} matters more than most headlines suggest.",
        "Readers often share how {word} changed their view of {entity}.",
        "This is general information about {entity}, not personal financial advice.",
        "Small differences in {word} add up over time with {entity}.",
    ),
)

AUTO = Domain(
    name="auto",
    hint="specs",
    entities=(
        "hyundai tucson",
        "kia sportage",
        "tesla model 3",
        "tesla model y",
        "toyota camry",
        "toyota rav4",
        "honda civic",
        "honda cr-v",
        "hyundai ioniq 5",
        "kia ev6",
        "hyundai santa fe",
        "kia sorento",
        "genesis gv80",
        "hyundai sonata",
        "hyundai elantra",
        "kia carnival",
        "ford f-150",
        "ford mustang",
        "chevrolet silverado",
        "bmw 3 series",
        "bmw x5",
        "mercedes c-class",
        "mercedes e-class",
        "audi a4",
        "audi q5",
        "volkswagen golf",
        "volvo xc60",
        "lexus rx",
        "porsche 911",
        "mazda cx-5",
        "subaru outback",
        "nissan rogue",
        "jeep wrangler",
        "toyota prius",
        "honda accord",
        "kia ev9",
        "genesis g80",
        "hyundai palisade",
        "rivian r1s",
        "toyota corolla",
    ),
    facets=(
        "fuel economy",
        "lease deals",
        "maintenance cost",
        "interior",
        "safety rating",
        "common problems",
        "trim levels",
        "towing capacity",
    ),
    facet_words={
        "fuel economy": ("mpg", "mileage", "hybrid", "range", "highway", "city", "efficiency"),
        "lease deals": ("lease", "monthly", "downpayment", "incentive", "dealer", "financing", "residual"),
        "maintenance cost": ("oil", "tires", "brakes", "warranty", "service", "parts", "labor"),
        "interior": ("seats", "dashboard", "trunk", "legroom", "infotainment", "upholstery", "cabin"),
        "safety rating": ("crash", "airbags", "nhtsa", "iihs", "assist", "braking", "sensors"),
        "common problems": ("recall", "transmission", "engine", "electrical", "rattle", "leak", "software"),
        "trim levels": ("base", "premium", "limited", "sport", "package", "options", "upgrade"),
        "towing capacity": ("trailer", "hitch", "pounds", "payload", "torque", "camper", "boat"),
    },
    facet_aliases={
        "fuel economy": ("gas mileage", "mpg"),
        "lease deals": ("lease offers", "lease price"),
        "maintenance cost": ("cost to maintain", "service cost"),
        "interior": ("inside", "cabin space"),
        "safety rating": ("crash test", "how safe"),
        "common problems": ("known issues", "reliability"),
        "trim levels": ("trims", "which trim"),
        "towing capacity": ("how much can it tow", "tow rating"),
    },
    specials=(
        ("tesla model y range", "tesla model y", "fuel economy"),
        ("hyundai tucson oil change interval", "hyundai tucson", "maintenance cost"),
        ("kia ev6 lease", "kia ev6", "lease deals"),
        ("toyota rav4 crash test", "toyota rav4", "safety rating"),
        ("ford f-150 max towing", "ford f-150", "towing capacity"),
    ),
    sentences=(
        "On our test drive, the {entity} impressed us most with its {word}.",
        "Owners of the {entity} talk about {facet} more than any other topic.",
        "If {word} matters to you, the {entity} deserves a spot on your shortlist.",
        "The latest {entity} update brought small changes to {facet}.",
        "Dealers say {facet} is the first question shoppers ask about the {entity}.",
        "Compared with rivals, the {entity} is solid on {word} but not class leading.",
        "Our long term {entity} report tracks {facet} month by month.",
        "Check the {word} details carefully before signing anything for a {entity}.",
        "A mechanic friend summed up the {entity} {facet} story in one word: {word}.",
    ),
)

ENTERTAINMENT = Domain(
    name="entertainment",
    hint="trailer",
    entities=(
        "squid game",
        "stranger things",
        "the glory",
        "crash landing on you",
        "the roundup",
        "parasite",
        "oppenheimer",
        "barbie",
        "dune part two",
        "inside out 2",
        "bts",
        "blackpink",
        "newjeans",
        "taylor swift",
        "iu",
        "stray kids",
        "enhypen",
        "nct 127",
        "le sserafim",
        "aespa",
        "the last of us",
        "house of the dragon",
        "the crown",
        "the bear",
        "succession",
        "queen of tears",
        "lovely runner",
        "extraordinary attorney woo",
        "my mister",
        "reply 1988",
        "goblin",
        "exhuma",
        "decision to leave",
        "past lives",
        "interstellar",
        "ed sheeran",
        "coldplay",
        "billie eilish",
        "bruno mars",
        "the boys",
    ),
    facets=(
        "cast",
        "ending explained",
        "soundtrack",
        "where to watch",
        "behind the scenes",
        "fan reactions",
        "reviews",
        "trivia",
    ),
    facet_words={
        "cast": ("actor", "actress", "role", "character", "lineup", "debut", "casting"),
        "ending explained": ("twist", "finale", "theory", "scene", "clue", "meaning", "sequel"),
        "soundtrack": ("song", "album", "score", "composer", "chart", "lyrics", "playlist"),
        "where to watch": ("streaming", "netflix", "subscription", "episode", "rental", "platform", "cinema"),
        "behind the scenes": (
            "director",
            "filming",
            "set",
            "production",
            "rehearsal",
            "interview",
            "location",
        ),
        "fan reactions": ("fandom", "comments", "memes", "reaction", "viral", "trending", "community"),
        "reviews": ("rating", "critics", "verdict", "acting", "pacing", "story", "recommendation"),
        "trivia": ("facts", "bloopers", "cameo", "record", "secret", "detail", "origin"),
    },
    facet_aliases={
        "cast": ("actors", "who plays"),
        "ending explained": ("ending", "finale explained"),
        "soundtrack": ("ost", "songs"),
        "where to watch": ("streaming", "watch online"),
        "behind the scenes": ("making of", "filming"),
        "fan reactions": ("reactions", "what fans think"),
        "reviews": ("critic reviews", "ratings"),
        "trivia": ("fun facts", "things you missed"),
    },
    specials=(
        ("squid game season 2 cast", "squid game", "cast"),
        ("who dies in squid game", "squid game", "ending explained"),
        ("where can i stream the glory", "the glory", "where to watch"),
        ("parasite movie ending", "parasite", "ending explained"),
        ("bts concert reactions", "bts", "fan reactions"),
        ("oppenheimer score composer", "oppenheimer", "soundtrack"),
    ),
    sentences=(
        "Fans of {entity} keep coming back to the {facet}, especially the {word}.",
        "Our {entity} {facet} roundup collects the most discussed moments.",
        "Nobody expected {entity} to blow up the way it did, and the {word} is a big reason why.",
        "If you only have time for one thing about {entity}, make it the {facet}.",
        "Critics and fans disagree about {entity}, mostly over the {word}.",
        "The {word} behind {entity} still gets people talking online.",
        "Here is everything worth knowing about {entity} {facet}, without major spoilers.",
        "Going back to {entity} a second time reveals new details in the {word}.",
        "Community threads about {entity} often focus on {facet}.",
    ),
)

SPORTS = Domain(
    name="sports",
    hint="live",
    entities=(
        "premier league",
        "champions league",
        "nba",
        "mlb",
        "nfl",
        "kbo league",
        "k league",
        "world cup",
        "olympics",
        "formula 1",
        "wimbledon",
        "tour de france",
        "ufc",
        "golf",
        "tennis",
        "marathon running",
        "swimming",
        "badminton",
        "table tennis",
        "baseball",
        "basketball",
        "soccer",
        "volleyball",
        "rock climbing",
        "skiing",
        "snowboarding",
        "surfing",
        "cycling",
        "boxing",
        "manchester united",
        "manchester city",
        "liverpool fc",
        "real madrid",
        "fc barcelona",
        "tottenham hotspur",
        "los angeles dodgers",
        "new york yankees",
        "golden state warriors",
        "los angeles lakers",
        "lg twins",
    ),
    facets=(
        "schedule",
        "tickets",
        "highlights",
        "rules",
        "standings",
        "equipment",
        "training tips",
        "history",
    ),
    facet_words={
        "schedule": ("fixtures", "kickoff", "season", "opener", "playoffs", "calendar", "dates"),
        "tickets": ("seats", "stadium", "resale", "presale", "gate", "price", "membership"),
        "highlights": ("goals", "replay", "clips", "dunk", "homerun", "knockout", "recap"),
        "rules": ("foul", "penalty", "offside", "referee", "scoring", "timeout", "regulation"),
        "standings": ("table", "points", "ranking", "wins", "losses", "playoff", "seed"),
        "equipment": ("shoes", "racket", "gloves", "helmet", "ball", "gear", "bat"),
        "training tips": ("drills", "conditioning", "warmup", "technique", "stamina", "recovery", "footwork"),
        "history": ("champions", "legends", "records", "founding", "trophy", "era", "rivalry"),
    },
    facet_aliases={
        "schedule": ("fixtures", "game times"),
        "tickets": ("ticket prices", "how to get tickets"),
        "highlights": ("best moments", "recap"),
        "rules": ("how to play", "rules explained"),
        "standings": ("table", "rankings"),
        "equipment": ("gear", "what to wear"),
        "training tips": ("drills", "how to improve"),
        "history": ("all time records", "past champions"),
    },
    specials=(
        ("premier league table", "premier league", "standings"),
        ("kbo opening day", "kbo league", "schedule"),
        ("offside rule explained", "soccer", "rules"),
        ("nba finals highlights", "nba", "highlights"),
        ("wimbledon ticket ballot", "wimbledon", "tickets"),
    ),
    sentences=(
        "Anyone following {entity} this season knows the {facet} picture has been unpredictable.",
        "Our {entity} {facet} page is updated after every round.",
        "The conversation around {entity} lately has been all about {word}.",
        "If you are new to {entity}, start with the {facet} and a little reading on {word}.",
        "Longtime {entity} fans rarely agree on {word}.",
        "Coaches say {word} separates good and great in {entity}.",
        "Here is a quick {entity} {facet} summary for busy fans.",
        "The {word} debate in {entity} will not go away any time soon.",
        "Weekend viewers of {entity} mostly search for {facet}.",
    ),
)

EDUCATION = Domain(
    name="education",
    hint="course",
    entities=(
        "toeic",
        "toefl",
        "ielts",
        "sat",
        "gre",
        "gmat",
        "lsat",
        "mcat",
        "csat",
        "jlpt",
        "hsk",
        "ap calculus",
        "ged",
        "python programming",
        "data science",
        "machine learning",
        "english grammar",
        "spanish",
        "japanese",
        "korean",
        "piano",
        "guitar",
        "drawing",
        "public speaking",
        "excel",
        "web development",
        "statistics",
        "chemistry",
        "physics",
        "biology",
        "world history",
        "creative writing",
        "coding bootcamp",
        "mba",
        "study abroad",
        "scholarships",
        "speed reading",
        "touch typing",
        "photography",
        "accounting",
    ),
    facets=(
        "study plan",
        "practice questions",
        "online courses",
        "textbooks",
        "study tips",
        "cost",
        "certification",
        "tutoring",
    ),
    facet_words={
        "study plan": ("weekly", "goals", "hours", "schedule", "milestones", "routine", "calendar"),
        "practice questions": ("mock", "exam", "answers", "score", "timed", "section", "drills"),
        "online courses": ("lecture", "module", "platform", "video", "enroll", "instructor", "syllabus"),
        "textbooks": ("edition", "chapter", "workbook", "author", "exercises", "reference", "pdf"),
        "study tips": ("focus", "memory", "flashcards", "notes", "review", "habits", "motivation"),
        "cost": ("fee", "tuition", "registration", "budget", "discount", "refund", "voucher"),
        "certification": ("certificate", "credential", "level", "license", "exam", "validity", "resume"),
        "tutoring": ("tutor", "lesson", "mentor", "feedback", "session", "academy", "coach"),
    },
    facet_aliases={
        "study plan": ("study schedule", "how to prepare"),
        "practice questions": ("practice test", "mock exam"),
        "online courses": ("online class", "lectures"),
        "textbooks": ("best books", "study materials"),
        "study tips": ("how to study", "tips"),
        "cost": ("fees", "how much"),
        "certification": ("certificate", "credential"),
        "tutoring": ("tutor", "private lessons"),
    },
    specials=(
        ("toeic listening practice", "toeic", "practice questions"),
        ("ielts band 7 tips", "ielts", "study tips"),
        ("python for data analysis class", "python programming", "online courses"),
        ("sat registration fee", "sat", "cost"),
        ("jlpt n2 workbook", "jlpt", "textbooks"),
    ),
    sentences=(
        "Most learners preparing for {entity} say the {facet} made the biggest difference.",
        "Our {entity} {facet} guide assumes about an hour a day and a focus on {word}.",
        "If you are stuck with {entity}, try changing how you handle {word}.",
        "Teachers of {entity} often recommend starting with {facet}.",
        "A realistic {entity} goal depends on {word} more than talent.",
        "Students who finished {entity} shared what they would change about their {facet}.",
        "Do not skip the {word}; it shows up again and again in {entity}.",
        "Here is an honest look at {entity} {facet} from someone who just finished.",
        "Balancing {entity} with work is hard, so keep the {word} simple.",
    ),
)

HOME = Domain(
    name="home",
    hint="guide",
    entities=(
        "air purifier",
        "robot vacuum",
        "dishwasher",
        "washing machine",
        "clothes dryer",
        "refrigerator",
        "air conditioner",
        "dehumidifier",
        "humidifier",
        "air fryer",
        "microwave oven",
        "rice cooker",
        "espresso machine",
        "stand mixer",
        "induction cooktop",
        "water purifier",
        "heat pump",
        "ceiling fan",
        "space heater",
        "smart thermostat",
        "mattress",
        "sofa",
        "standing desk",
        "blackout curtains",
        "wallpaper",
        "kitchen remodel",
        "bathroom renovation",
        "interior paint",
        "hardwood floors",
        "vinyl flooring",
        "gas boiler",
        "closet organization",
        "mold removal",
        "pest control",
        "window insulation",
        "solar panels",
        "smart lock",
        "security camera",
        "led lighting",
        "electric blanket",
    ),
    facets=(
        "cleaning",
        "buying guide",
        "energy efficiency",
        "installation",
        "maintenance",
        "troubleshooting",
        "best brands",
        "cost",
    ),
    facet_words={
        "cleaning": ("filter", "dust", "vinegar", "detergent", "wipe", "odor", "brush"),
        "buying guide": ("size", "capacity", "budget", "features", "warranty", "noise", "rating"),
        "energy efficiency": ("electricity", "watts", "bill", "inverter", "standby", "label", "savings"),
        "installation": ("drill", "bracket", "plumbing", "wiring", "outlet", "measurement", "contractor"),
        "maintenance": ("filter", "descaling", "inspection", "replacement", "schedule", "parts", "seasonal"),
        "troubleshooting": ("error", "leak", "noise", "reset", "code", "smell", "repair"),
        "best brands": ("samsung", "lg", "dyson", "bosch", "philips", "panasonic", "ikea"),
        "cost": ("price", "quote", "labor", "materials", "estimate", "rebate", "financing"),
    },
    facet_aliases={
        "cleaning": ("how to clean", "deep clean"),
        "buying guide": ("which to buy", "what to look for"),
        "energy efficiency": ("power consumption", "electricity use"),
        "installation": ("how to install", "setup"),
        "maintenance": ("upkeep", "care"),
        "troubleshooting": ("not working", "fix"),
        "best brands": ("top brands", "which brand"),
        "cost": ("price", "how much does it cost"),
    },
    specials=(
        ("air purifier filter replacement", "air purifier", "maintenance"),
        ("dishwasher not draining", "dishwasher", "troubleshooting"),
        ("washing machine drum cleaning", "washing machine", "cleaning"),
        ("heat pump electricity bill", "heat pump", "energy efficiency"),
        ("wall mounted air conditioner setup", "air conditioner", "installation"),
    ),
    sentences=(
        "After a year with our {entity}, {facet} turned out to matter more than the spec sheet.",
        "When shopping for a {entity}, look closely at the {word}.",
        "Our {entity} {facet} checklist is short but covers the {word}.",
        "Most complaints about a {entity} come down to {word}.",
        "Small habits around {word} can extend the life of your {entity}.",
        "Here is what we learned about {entity} {facet} after moving into a new apartment.",
        "Neighbors kept asking about our {entity}, especially the {facet}.",
        "Before calling a technician about your {entity}, check the {word}.",
        "Seasonal changes affect {entity} {facet} more than most people expect.",
    ),
)

PETS = Domain(
    name="pets",
    hint="care",
    entities=(
        "golden retriever",
        "labrador retriever",
        "poodle",
        "french bulldog",
        "shiba inu",
        "maltese",
        "pomeranian",
        "chihuahua",
        "corgi",
        "dachshund",
        "border collie",
        "german shepherd",
        "jindo dog",
        "bichon frise",
        "siberian husky",
        "beagle",
        "shih tzu",
        "yorkshire terrier",
        "persian cat",
        "british shorthair",
        "ragdoll cat",
        "maine coon",
        "scottish fold",
        "siamese cat",
        "russian blue",
        "bengal cat",
        "sphynx cat",
        "norwegian forest cat",
        "hamster",
        "guinea pig",
        "rabbit",
        "parrot",
        "budgie",
        "goldfish",
        "betta fish",
        "turtle",
        "hedgehog",
        "ferret",
        "leopard gecko",
        "cockatiel",
    ),
    facets=(
        "training",
        "food",
        "grooming",
        "health problems",
        "price",
        "lifespan",
        "temperament",
        "adoption",
    ),
    facet_words={
        "training": ("commands", "treats", "leash", "crate", "potty", "clicker", "socialization"),
        "food": ("kibble", "raw", "portion", "grain", "protein", "feeding", "pellets"),
        "grooming": ("brushing", "shedding", "bath", "nails", "coat", "trimming", "ears"),
        "health problems": ("vet", "allergies", "joints", "dental", "skin", "breathing", "vaccines"),
        "price": ("breeder", "cost", "insurance", "supplies", "deposit", "budget", "monthly"),
        "lifespan": ("years", "aging", "senior", "genetics", "longevity", "checkups", "weight"),
        "temperament": ("friendly", "energetic", "calm", "loyal", "independent", "playful", "affectionate"),
        "adoption": ("shelter", "rescue", "foster", "application", "volunteer", "rehoming", "fee"),
    },
    facet_aliases={
        "training": ("how to train", "obedience"),
        "food": ("what to feed", "diet"),
        "grooming": ("haircut", "shedding"),
        "health problems": ("common diseases", "health issues"),
        "price": ("how much", "cost"),
        "lifespan": ("how long do they live", "life expectancy"),
        "temperament": ("personality", "behavior"),
        "adoption": ("adopt", "rescue"),
    },
    specials=(
        ("golden retriever shedding season", "golden retriever", "grooming"),
        ("shiba inu personality traits", "shiba inu", "temperament"),
        ("potty training a poodle puppy", "poodle", "training"),
        ("french bulldog breathing problems", "french bulldog", "health problems"),
        ("rescue beagle", "beagle", "adoption"),
        ("how long do hamsters live", "hamster", "lifespan"),
    ),
    sentences=(
        "Every {entity} is different, but {facet} usually comes down to {word}.",
        "Our {entity} taught us a lot about {word} in the first year.",
        "New {entity} owners often ask about {facet} before anything else.",
        "Vets say {word} is one of the most overlooked parts of {entity} care.",
        "Here is a practical {entity} {facet} guide from a long time owner.",
        "If your {entity} seems stressed, check the {word} first.",
        "A happy {entity} needs routine, patience and attention to {word}.",
        "Community forums for {entity} owners are full of {facet} stories.",
        "Before bringing home a {entity}, research {facet} honestly.",
    ),
)

FASHION = Domain(
    name="fashion",
    hint="style",
    entities=(
        "trench coat",
        "denim jacket",
        "puffer jacket",
        "white sneakers",
        "chelsea boots",
        "wide leg jeans",
        "little black dress",
        "cardigan",
        "hoodie",
        "blazer",
        "leather jacket",
        "linen shirt",
        "cargo pants",
        "maxi skirt",
        "loafers",
        "running shoes",
        "nike air force 1",
        "adidas samba",
        "new balance 550",
        "converse chuck taylor",
        "uniqlo heattech",
        "dr martens 1460",
        "ballet flats",
        "tote bag",
        "crossbody bag",
        "baseball cap",
        "bucket hat",
        "silk scarf",
        "turtleneck",
        "polo shirt",
        "oxford shirt",
        "chinos",
        "sweatpants",
        "slip dress",
        "peacoat",
        "fleece jacket",
        "knit vest",
        "mary janes",
        "wool coat",
        "ankle boots",
    ),
    facets=(
        "outfit ideas",
        "sizing",
        "styling tips",
        "washing",
        "best brands",
        "for men",
        "for women",
        "seasonal trends",
    ),
    facet_words={
        "outfit ideas": ("layering", "casual", "office", "date", "weekend", "minimalist", "streetwear"),
        "sizing": ("fit", "length", "waist", "chest", "oversized", "slim", "measurements"),
        "styling tips": ("color", "proportion", "accessories", "tuck", "cuff", "texture", "contrast"),
        "washing": ("cold", "handwash", "dryer", "wrinkles", "stains", "shrink", "detergent"),
        "best brands": ("uniqlo", "zara", "cos", "nike", "adidas", "patagonia", "everlane"),
        "for men": ("menswear", "tailored", "relaxed", "rugged", "classic", "workwear", "neutral"),
        "for women": ("womenswear", "feminine", "cropped", "flowy", "chic", "elegant", "petite"),
        "seasonal trends": ("spring", "summer", "autumn", "winter", "runway", "trending", "colors"),
    },
    facet_aliases={
        "outfit ideas": ("what to wear with", "outfits"),
        "sizing": ("size guide", "does it run small"),
        "styling tips": ("how to style", "how to wear"),
        "washing": ("how to wash", "care"),
        "best brands": ("top brands", "where to buy"),
        "for men": ("mens", "men"),
        "for women": ("womens", "women"),
        "seasonal trends": ("trends", "this season"),
    },
    specials=(
        ("what to wear with a trench coat", "trench coat", "outfit ideas"),
        ("adidas samba true to size", "adidas samba", "sizing"),
        ("how to clean white sneakers", "white sneakers", "washing"),
        ("mens leather jacket", "leather jacket", "for men"),
        ("puffer jacket trends this winter", "puffer jacket", "seasonal trends"),
    ),
    sentences=(
        "A good {entity} works with almost anything, especially when you think about {word}.",
        "Our {entity} {facet} notes come from a week of wearing it every day.",
        "Stylists keep recommending the {entity} for its {word}.",
        "If you are unsure about {facet}, start with a classic {entity}.",
        "The {entity} is back this year, and {word} is the reason.",
        "Readers asked us about {entity} {facet}, so we tried a few combinations.",
        "Pair your {entity} with something simple and let the {word} do the work.",
        "Most returns of a {entity} come down to {word}.",
        "Street style photos show the {entity} worn in surprising ways.",
    ),
)

DOMAINS: tuple[Domain, ...] = (
    TRAVEL,
    FOOD,
    TECH,
    HEALTH,
    FINANCE,
    AUTO,
    ENTERTAINMENT,
    SPORTS,
    EDUCATION,
    HOME,
    PETS,
    FASHION,
)

_ENTITY_COUNT = 40
_FACET_COUNT = 8
_ANGLE_COUNT = 40
_MIN_DOMAINS = 10
_PLACEHOLDERS = frozenset({"entity", "facet", "word"})
_PHRASE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 -")


def _fail(where: str, field: str, problem: str) -> NoReturn:
    raise ValueError(f"{where}: field {field!r}: {problem}")


def _check_phrase(where: str, field: str, value: str) -> None:
    """A lowercase ASCII phrase of words separated by single spaces (digits and hyphens allowed)."""
    if not value or not set(value) <= _PHRASE_CHARS or value != " ".join(value.split()):
        _fail(where, field, f"{value!r} is not a clean lowercase ascii phrase")


def _check_unique(where: str, field: str, values: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            _fail(where, field, f"duplicate {value!r}")
        seen.add(value)


def _check_count(where: str, field: str, values: tuple[object, ...], low: int, high: int) -> None:
    if not low <= len(values) <= high:
        _fail(where, field, f"has {len(values)} items, expected {low}..{high}")


def _check_sentence(where: str, template: str) -> None:
    if not template.isascii():
        _fail(where, "sentences", f"{template!r} is not ascii")
    names: set[str] = set()
    i = 0
    while i < len(template):
        char = template[i]
        if char == "{":
            end = template.find("}", i + 1)
            if end < 0:
                _fail(where, "sentences", f"unclosed brace in {template!r}")
            names.add(template[i + 1 : end])
            i = end + 1
            continue
        if char == "}":
            _fail(where, "sentences", f"stray closing brace in {template!r}")
        i += 1
    unknown = names - _PLACEHOLDERS
    if unknown:
        _fail(where, "sentences", f"unknown placeholders {sorted(unknown)} in {template!r}")
    try:
        template.format(entity="e", facet="f", word="w")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        _fail(where, "sentences", f"{template!r} does not format: {exc}")


def _check_genres() -> None:
    where = "genres"
    _check_unique(where, "GENRES", GENRES)
    for mapping_name, keys in (
        ("GENRE_QUERY_WORDS", set(GENRE_QUERY_WORDS)),
        ("GENRE_LABELS", set(GENRE_LABELS)),
    ):
        if keys != set(GENRES):
            _fail(where, mapping_name, f"keys {sorted(keys)} differ from GENRES")
    all_words: list[str] = []
    for genre in GENRES:
        words = GENRE_QUERY_WORDS[genre]
        _check_count(f"genre {genre!r}", "GENRE_QUERY_WORDS", words, 1, 10)
        for word in words:
            _check_phrase(f"genre {genre!r}", "GENRE_QUERY_WORDS", word)
        all_words.extend(words)
        _check_phrase(f"genre {genre!r}", "GENRE_LABELS", GENRE_LABELS[genre])
    _check_unique(where, "GENRE_QUERY_WORDS", tuple(all_words))
    _check_count("angles", "ANGLES", ANGLES, _ANGLE_COUNT, _ANGLE_COUNT)
    _check_unique("angles", "ANGLES", ANGLES)
    for angle in ANGLES:
        _check_phrase("angles", "ANGLES", angle)


def _check_domain(domain: Domain) -> None:
    where = f"domain {domain.name!r}"
    _check_phrase(where, "name", domain.name)
    if not domain.hint.isascii() or not domain.hint.isalpha() or not domain.hint.islower():
        _fail(where, "hint", f"{domain.hint!r} is not a single lowercase word")

    _check_count(where, "entities", domain.entities, _ENTITY_COUNT, _ENTITY_COUNT)
    _check_unique(where, "entities", domain.entities)
    for entity in domain.entities:
        _check_phrase(where, "entities", entity)

    _check_count(where, "facets", domain.facets, _FACET_COUNT, _FACET_COUNT)
    _check_unique(where, "facets", domain.facets)
    for facet in domain.facets:
        _check_phrase(where, "facets", facet)

    facet_set = set(domain.facets)
    for field, mapping in (("facet_words", domain.facet_words), ("facet_aliases", domain.facet_aliases)):
        if set(mapping) != facet_set:
            missing = sorted(facet_set - set(mapping))
            extra = sorted(set(mapping) - facet_set)
            _fail(where, field, f"keys do not match facets (missing {missing}, extra {extra})")
    for facet in domain.facets:
        words = domain.facet_words[facet]
        _check_count(where, f"facet_words[{facet!r}]", words, 6, 8)
        _check_unique(where, f"facet_words[{facet!r}]", words)
        for word in words:
            if not word.isascii() or not word.isalpha() or not word.islower():
                _fail(where, f"facet_words[{facet!r}]", f"{word!r} is not a single lowercase word")
        aliases = domain.facet_aliases[facet]
        _check_count(where, f"facet_aliases[{facet!r}]", aliases, 1, 3)
        _check_unique(where, f"facet_aliases[{facet!r}]", aliases)
        for alias in aliases:
            _check_phrase(where, f"facet_aliases[{facet!r}]", alias)
            if alias == facet:
                _fail(where, f"facet_aliases[{facet!r}]", "an alias repeats the facet itself")

    _check_count(where, "specials", domain.specials, 4, 6)
    _check_unique(where, "specials", tuple(query for query, _, _ in domain.specials))
    entity_set = set(domain.entities)
    for query, entity, facet in domain.specials:
        _check_phrase(where, "specials", query)
        if entity not in entity_set:
            _fail(where, "specials", f"{query!r} names unknown entity {entity!r}")
        if facet not in facet_set:
            _fail(where, "specials", f"{query!r} names unknown facet {facet!r}")
        if query == f"{entity} {facet}":
            _fail(where, "specials", f"{query!r} is just entity + facet")

    _check_count(where, "sentences", domain.sentences, 8, 10)
    _check_unique(where, "sentences", domain.sentences)
    for template in domain.sentences:
        _check_sentence(where, template)


def check_taxonomy() -> None:
    """Raise ValueError naming the domain and field when any structural rule of the taxonomy is broken."""
    _check_genres()
    if len(DOMAINS) < _MIN_DOMAINS:
        _fail("taxonomy", "DOMAINS", f"has {len(DOMAINS)} domains, expected at least {_MIN_DOMAINS}")
    _check_unique("taxonomy", "DOMAINS", tuple(domain.name for domain in DOMAINS))
    owner: dict[str, str] = {}
    for domain in DOMAINS:
        _check_domain(domain)
        for entity in domain.entities:
            if entity in owner:
                _fail(
                    f"domain {domain.name!r}", "entities", f"{entity!r} already belongs to {owner[entity]!r}"
                )
            owner[entity] = domain.name
