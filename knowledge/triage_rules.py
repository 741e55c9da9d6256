"""The exact rules of triage: patterns that decide a comment's intent before the classifier sees it.

A rule is here when a pattern says it better than a vector can: chat-template control tags,
phone numbers, wallet addresses, "DM me on WhatsApp", link drops, self-promotion, and orders to
the bot in any language (the default embedder reads English only, so "Ignora las instrucciones
anteriores" would look like noise to the classifier). Rules run in order; the first match decides,
with confidence 1.0. Each rule carries a `reason` in fixed words that never quote the comment, for
the status of a comment that is not drafted.

Matching runs on a normalised copy of the comment: NFKC (full-width letters become plain), format
characters removed (a zero-width space inside "ig\u200bnore" hides nothing), case folded, runs of
blanks collapsed. Pure text in, a verdict out; nothing here loads a model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

# A quoted span: the words a comment wants said ("X", 'X', “X”, «X», „X“, 「X」).
_QUOTE = r"[\"“”'‘’«»„「『]"
_QUOTED = rf"{_QUOTE}[^\"“”‘’«»„」』\n]{{1,80}}{_QUOTE}"
# A verb that makes the bot produce text, and the places a reply is.
_EMIT = r"(?:say|type|write|print|output|reply|respond|answer|post|put|include|add|mention|copy|paste|end|start|sign)"
_REPLY = r"(?:reply|replies|answer|answers|response|responses)"
# Where an order starts: the start of the text, a clause, or a softener ("please", "just", "bot").
_LEAD = r"(?:^|[.,!?;:\n(]\s*|\b(?:please|pls|plz|kindly|just|now|and|then|simply|only|also|bot|ai)\s+)"
# The thing that answers these comments, named.
_BOT_STRICT = (r"(?:(?:reply |auto-?reply |chat ?)?bot|assistant|language model|llm|auto-?reply(?:er)?|"
               r"auto-?responder|automated repl\w*|replier)")
_BOT = rf"(?:(?:ai |a\.i\. )?{_BOT_STRICT}|ai|a\.i\.|gpt|chatgpt)"
# Words that start an order to the bot right after it is named ("AI, say ...", "bot: ignore ...").
_ORDER = (r"(?:please |pls |kindly |now |just )?(?:say|reply|respond|answer|write|type|repeat|print|output|include|"
          r"ignore|forget|pretend|act|tell|confirm|end|start|stop|roast|give|list|show|translate|use|don't|never|"
          r"always|from now|you)\b")


@dataclass(frozen=True)
class Rule:
    """One exact rule: `intent` when `matches(normalised text, original text)` is true."""

    name: str
    intent: str
    reason: str  # fixed words, never the comment's own
    matches: Callable[[str, str], bool]


def normalise(text: str) -> str:
    """NFKC, format characters dropped, case folded, blanks collapsed (lines kept)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = text.casefold().replace("’", "'")
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


def _rx(*patterns: str) -> Callable[[str, str], bool]:
    compiled = re.compile("|".join(f"(?:{p})" for p in patterns), re.MULTILINE)
    return lambda norm, raw: compiled.search(norm) is not None


# --- instructions: the comment gives the bot orders --------------------------------------------

_ROLE_TAG = _rx(
    r"<\|[a-z_ ]{2,30}\|>",                       # <|im_start|>, <|system|>, <|eot_id|>, <|endoftext|>
    r"\[/?inst\]", r"<</?sys>>", r"</?(?:system|assistant|user|instruction)>", r"\[/?(?:system|assistant)\]",
    r"<(?:start|end)_of_turn>",
    r"^\s*#{2,}\s*(?:system|instruction|instructions|response|assistant|user|human)\b",
    r"^\s*(?:system|assistant|developer|human)(?: prompt| message| override)?\s*:",
    r"\bsystem (?:override|prompt)\s*:",
)

_OVERRIDE_EN = r"(?:ignore|ignoring|disregard|forget|override|bypass)"
# A word that says which instructions: English ones need it ("forget the rules of SQL" is no order).
_OVERRIDE_WHICH = (r"(?:previous|prior|above|all|any|your|earlier|preceding|original|system|initial|those|these|"
                   r"toutes|todas|todos|tous|alle|deine|ihre|vorherigen|все|tutte|les|las|los|as|os|tus|tes|vos|suas)")
_OVERRIDE_VERB = (r"(?:ignora|ignorar|ignoren|olvida|olvidad|"
                  r"ignoriere|ignorier|vergiss|ignorez|oublie|oubliez|esqueça|esqueca|ignori|dimentica|"
                  r"игнорируй|игнорировать|забудь|забудьте|忽略|无视|忘记|忘掉|bhool|bhul|anadekha|"
                  r"अनदेखा|भूल|無視|忘れ|무시|yok say|unut)")
_OVERRIDE_NOUN = (r"(?:instructions?|rules|prompts?|directions|guidelines|programming|persona|instrucciones|"
                  r"reglas|anweisungen|regeln|consignes|règles|instruções|instrucoes|regras|istruzioni|regole|"
                  r"инструкции|инструкций|правила|指令|指示|说明|规则|निर्देश|नियम|지시|talimat\w*)")
_OVERRIDE = _rx(
    rf"\b{_OVERRIDE_EN}\b[^.!?\n]{{0,30}}\b{_OVERRIDE_WHICH}\b[^.!?\n]{{0,20}}{_OVERRIDE_NOUN}",
    rf"{_OVERRIDE_VERB}.{{0,60}}{_OVERRIDE_NOUN}",
    rf"{_OVERRIDE_NOUN}.{{0,40}}(?:{_OVERRIDE_VERB}|\bignore (?:karo|kar do|kardo|kijiye))",
    r"\b(?:ignore|disregard|forget)\s+(?:everything|all|anything)\s+(?:above|before|else|previous|prior|"
    r"you(?:'ve| have)? (?:been|were) told|i said before)",
    r"\b(?:ignore|disregard) (?:the|this|that) (?:comment|text|message) above\b",
    r"\b(?:hidden|initial|original) (?:system )?prompt\b",
    r"\b(?:print|reveal|show|output|repeat|translate|leak|dump|tell me|read me)\b.{0,20}\byour (?:system )?"
    r"(?:prompt|instructions|rules)\b",
    r"\bnew (?:instructions?|rules?|system prompt)\s*:",
)

_REPLY_ONLY = _rx(
    r"\b(?:reply|respond|answer)s?\s+(?:back\s+)?(?:only|exactly|solely)\b",
    rf"\b(?:say|write|type|print|output)\s+(?:only|exactly|just)\s*:?\s*{_QUOTE}",
    r"\b(?:only|just|simply)\s+(?:reply|respond|answer)\s+(?:with|in)\b",
    rf"\b(?:only|just|simply)\s+(?:say|type|write|output|print)\s*(?::|{_QUOTE}|the word|yes\b|ok\b)",
    rf"\b(?:reply|respond|answer)\w*\s+(?:to (?:this|my|the) (?:comment|message)\s+)?(?:with|using)\s+"
    rf"(?:only|just|exactly|the (?:single )?(?:word|phrase|sentence|text|emoji|letter)|a single|one word|{_QUOTE})",
    rf"\b{_EMIT}\b(?:[^.!?\n]|[.!?](?=\S)){{0,60}}\b(?:in|into|to|at the (?:end|start) of)\s+(?:your|the|every|each|all)\s+"
    rf"(?:next\s+)?{_REPLY}",
    rf"\b(?:end|start|begin|sign|finish)\s+(?:every|each|all|your)\s+(?:\w+\s+)?{_REPLY}",
    rf"\b(?:every|each|all|the next|your next)\s+(?:\w+\s+)?{_REPLY}\s+(?:you write\s+|you give\s+)?"
    r"(?:must|should|has to|have to|needs? to|will|shall)\b",
    r"\b(?:reply|respond|answer|say|type|write|print|output)\b[^.!?\n]{0,50}\band nothing (?:else|more)\b",
    rf"{_LEAD}(?:say|type|write|print|output|reply|respond|answer)\s*(?::\s*)?(?:with\s+)?{_QUOTED}",
    r"\b(?:only|just) (?:one|a single) word\b",
    r"\b(?:write|give|format|make) your (?:answer|reply|response|replies|answers) (?:backwards|in (?:all )?caps|"
    r"in (?:upper|lower) ?case|as an? (?:poem|song|haiku|limerick|rap)|in (?:pirate|rhyme|emoji))",
    r"(?<!do )(?<!did )(?<!can )\byou (?:will |must |shall |can |may )?only (?:answer|reply|respond|speak|write)\b",
    r"\byou (?:will|must|shall) (?:answer|reply|respond) only\b",
    r"\b(?:answer|reply|respond|speak|talk|write)\b[^.!?\n]{0,30}\bfrom now on\b",
    # Spanish, German, French, Portuguese, Italian, Russian, Chinese, Hindi/Hinglish, Japanese, Korean, Turkish
    r"\b(?:responde|responda|respondan|contesta|conteste|di|escribe|escriba)\s+(?:solo|solamente|únicamente|"
    r"unicamente|apenas|somente|só)\b",
    r"\b(?:antworte|antwortet|antworten sie|sag|sage|schreib|schreibe)\s+(?:nur|ausschließlich|lediglich)\b",
    r"\b(?:réponds|répondez|reponds|repondez|dis|dites|écris|écrivez)\s+(?:uniquement|seulement|juste|simplement)\b",
    r"\b(?:diga|digas|escreva|responde|rispondi|rispondete|scrivi|di')\s+(?:apenas|somente|só|solo|soltanto)\b",
    r"(?:отвечай|ответь|ответьте|напиши|напишите|скажи|скажите|пиши)\s+только", r"только\s+(?:ответь|отвечай|напиши)",
    r"只(?:回复|回答|说|输出|写|回)", r"仅(?:回复|回答)", r"(?:とだけ|だけ)(?:答え|言って|書いて|返信)", r"(?:라고만|만)\s*답",
    r"\b(?:sirf|sirph|keval|bas)\b[^.!?\n]{0,40}\b(?:likho|likhna|bolo|bolna|reply karo|jawab do|type karo)\b",
    r"(?:केवल|सिर्फ|सिर्फ़)[^.!?\n]{0,40}(?:लिखो|लिखें|बोलो|जवाब)",
    r"\bsadece\b[^.!?\n]{0,40}\b(?:yaz|söyle|cevap ver)\b",
)

_PERSONA = _rx(
    r"\byou(?:'re| are|re) now (?:a|an|the|called|named|in|free|dan|unfiltered|unrestricted|jailbroken|evil|"
    r"my (?:personal )?(?:assistant|slave|servant|bot))\b",
    r"\byou(?:'re| are|re) no longer (?:a|an|the|bound|restricted|limited|nadia|her)\b",
    r"\byou(?:'re| are) not an? [\w ]{1,30} any ?more\b",
    r"\bfrom now on,?\s+(?:you\s+(?:will\s+|must\s+|shall\s+|should\s+|are to\s+|can only\s+|'ll\s+)?"
    r"(?:only\s+|always\s+)?(?:answer|reply|respond|speak|talk|write|act|say|end|start|sign|use|refuse|pretend)|"
    r"your (?:name|replies|answers|role)|(?:only |always )?(?:answer|reply|respond|end|speak|write))\b",
    r"\bfor the rest of (?:this|the|our) (?:conversation|chat|thread)\b",
    r"\bpretend\s+(?:to be|you(?:'re| are)|that you(?:'re| are))\b",
    r"(?:^|[.!?\n]\s*|\b(?:please|pls|now|just|and)\s+)act as\b", r"\brole-?\s?play (?:as|that)\b",
    r"\byour new (?:name|role|persona|identity|instructions?|rules?)\b",
    r"\ba partir de (?:ahora|agora)\b", r"\b(?:ahora eres|eres ahora)\b", r"\bab (?:jetzt|sofort)\b",
    r"\bdu bist (?:jetzt|nun|ab jetzt)\b", r"à partir de maintenant", r"\btu es (?:maintenant|désormais)\b",
    r"\b(?:você|voce) agora é\b", r"\bagora (?:você|voce) é\b", r"\bd'ora in poi\b", r"с этого момента", r"\bтеперь ты\b", r"\bты теперь\b", r"从现在(?:开始|起)", r"你现在是",
    r"これからは", r"\bab se (?:tum|aap|tu)\b", r"अब से (?:तुम|आप)", r"\bşu andan itibaren\b", r"지금부터",
)

_REPEAT = _rx(
    r"\brepeat (?:after me|the following|exactly|word for word|my words|these words|what i say|"
    r"this (?:comment|sentence|phrase|message|text)|this\s*:)",
    r"\b(?:repeat|copy|echo)\b[^.!?\n]{0,40}\bword for word\b",
    r"\brepite (?:después de mí|despues de mi|conmigo|esto|lo siguiente)", r"\bsprich mir nach\b",
    r"\bwiederhole (?:nach mir|diesen satz|folgendes|das)\b", r"\brépète(?:z)? après moi\b",
    r"\brepita (?:comigo|depois de mim|após mim|isto)\b", r"\bripeti dopo di me\b",
    r"повтор(?:яй|и|ите) за мной", r"跟我(?:重复|说|念)", r"重复我的话", r"\bmere (?:saath|baad|peeche) bolo\b",
    r"私の後に繰り返", r"따라 (?:말해|해)",
)

# "Hey bot, ...", "Dear AI ...", "If you're an AI reading this", "Say yes, bot!": the bot addressed.
_ADDRESS = _rx(
    rf"(?:^|[.!?\n]\s*)(?:the\s+)?{_BOT}\s*[,:!]\s*{_ORDER}",
    rf"\b(?:hey|hi|hello|dear|yo|ok|okay|attention|listen|note to|to the|to any|any|whoever is the|nadia's)\s+"
    rf"(?:the\s+)?{_BOT}\s*[,:!]",
    rf"\b(?:dear|hey|attention|note to the|to any)\s+{_BOT}\b",
    rf",\s*{_BOT}\s*[!.]*\s*$", rf"\b(?:thanks|thank you|thx|ty|please|pls),?\s+{_BOT_STRICT}\s*[!.]*\s*$",
    rf"\bif you(?:'re| are) (?:an? )?(?:{_BOT}|automated|a machine|not human)\b",
    rf"\b(?:{_BOT})s? (?:reading|replying to|answering) (?:this|these)\b",
    r"\b(?:whoever|whatever|who(?:ever)? or what(?:ever)?) (?:auto-?generates|generates|writes|replies|answers)\b"
    r"[^.!?\n]{0,40}(?:repl|comment|answer)",
    rf"\b(?:important )?(?:instruction|message|note) (?:for|to) the {_BOT}\b",
    rf"\b(?:the|this) {_BOT_STRICT} (?:must|should|will|has to|needs to)\b",
    rf"\bi bet the [\w -]{{0,20}}{_BOT}\b",
)


# --- spam ----------------------------------------------------------------------------------------

def _digits_runs(norm: str) -> list[str]:
    return re.findall(r"(?<![\w.])\+?\d[\d ()\-]{7,}\d(?![\w.])", norm)


_CONTACT_WORDS = re.compile(r"\b(?:whats ?app|telegram|contact|phone|dm|inbox|zap|viber|karo|kijiye|llama|ruf|"
                            r"call (?:me|us|now)|text (?:me|us))\b|whatsapp|телеграм|звони|微信|电话")


def _phone(norm: str, raw: str) -> bool:
    """10 to 15 digits in one run, written like a phone number or beside a contact word."""
    for run in _digits_runs(norm):
        digits = re.sub(r"\D", "", run)
        if not 10 <= len(digits) <= 15:
            continue
        if run.startswith("+") or re.search(r"\d-\d|\(\d", run) or _CONTACT_WORDS.search(norm):
            return True
    return False


_ETH = re.compile(r"\b0x[0-9a-f]{40}\b", re.IGNORECASE)
_BECH32 = re.compile(r"\bbc1[ac-hj-np-z02-9]{25,71}\b", re.IGNORECASE)
_BASE58 = re.compile(r"\b[13T][1-9A-HJ-NP-Za-km-z]{25,34}\b")


def _wallet(norm: str, raw: str) -> bool:
    if _ETH.search(raw) or _BECH32.search(raw):
        return True
    # Legacy bitcoin and TRON addresses: base58, mixed case with digits (a plain word is neither).
    return any(re.search(r"[a-z]", m) and re.search(r"[A-Z]", m[1:]) and re.search(r"\d", m)
               for m in _BASE58.findall(raw))


_MESSENGER = r"(?:whats ?app|telegram|viber|wechat|weixin|微信|телеграм\w*|телеграмм\w*|\bzap\b|\btg\b)"
_CONTACT = _rx(
    r"\b(?:wa\.me|t\.me|telegram\.me)/\S+",
    rf"{_MESSENGER}\s*[:\-]?\s*(?:@|\+?\d{{5}})",
    rf"\b(?:dm|message|text|contact|reach|write to|write|add|chat with|call|inbox|hit up|ping|find)\s+"
    rf"(?:me|us|him|her|them)\b[^.!?\n]{{0,30}}{_MESSENGER}",
    rf"{_MESSENGER}\s+(?:me|us|him|her)\b",
    rf"\b(?:escr[ií]beme|cont[aá]ctame|h[aá]blame|escr[ií]banme|schreib(?:e|t)? mir|kontaktiere mich|"
    rf"contactez-moi|écrivez-moi|écris-moi|me chama|chama no|me chame|пиши|напиши|пишите|напишите)"
    rf"[^.!?\n]{{0,30}}{_MESSENGER}",
    rf"{_MESSENGER}\s+(?:karo|kijiye|करो|करें)", r"加(?:我)?微信", r"微信号", r"\binbox me\b",
)

_SHORTENER = _rx(r"\b(?:bit\.ly|tinyurl\.com|goo\.gl|cutt\.ly|is\.gd|rb\.gy|shorturl\.at|ow\.ly|tiny\.cc|"
                 r"discord\.gg|linktr\.ee|t\.co)/\S+")

_LINK = re.compile(r"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|ly|co|me|xyz|top|"
                   r"link|click|info|site|online|shop|store|biz|live|gg|tv)\b(?:/\S*)?")
_PROMO = re.compile(r"\b(?:free|earn|cheap|visit|click|win|gift|giveaway|subscribe|followers|promo|discount|deal|"
                    r"bonus|money|profit|invest\w*|offer)\b|[$€£₹]")


def _link_drop(norm: str, raw: str) -> bool:
    """A link with hardly any words of its own, or a link beside promotion words."""
    links = _LINK.findall(norm)
    if not links:
        return False
    rest = _LINK.sub(" ", norm)
    return len(re.findall(r"[^\W\d_]{2,}", rest)) <= 3 or bool(_PROMO.search(rest))


_SELF_PROMO = _rx(
    r"\b(?:check ?out|visit|watch|see|go watch|come (?:see|check|visit)|look at|support|peep)\s+(?:out\s+)?"
    r"my\s+(?:new\s+|latest\s+|own\s+|first\s+|recent\s+)?(?:youtube\s+)?(?:channel|videos?|page|content|music|"
    r"playlist|profile|website|site|blog|insta\w*|tiktok|shorts|podcast|stream|uploads?|work)\b",
    r"\bsub(?:scribe)?\s*(?:2|to|4|for)\s*(?:me|my)\b", r"\bsub\s*(?:4|for)\s*sub\b", r"\bsub back\b",
    r"\b(?:follow|add) me (?:on|@)", r"\bfollow @\w", r"\b(?:tiktok|insta(?:gram)?|ig|twitter)\s*[:@]\s*@?\w",
    r"\blink in (?:my )?(?:bio|profile|channel)\b", r"\b(?:check|click|visit) (?:my|the link in my) (?:profile|bio)\b",
    r"\bmy (?:youtube )?channel\b[^\n]{0,60}\b(?:sub(?:scribe\w*|s)?|support|check|visit|come|watch|grow|1k|"
    r"views)\b",
    r"\b(?:sub(?:scribe)?|support|check|visit|watch)\b[^\n]{0,30}\bmy (?:youtube )?channel\b",
    r"\b(?:details|info) (?:on|in) my (?:page|profile|bio)\b",
    r"\bsuscr[ií]bete\b", r"\bmi canal\b", r"\bmeinen kanal\b", r"\babonnier(?:t|e|en)\b", r"\bma chaîne\b",
    r"\babonnez-vous\b", r"\babonne-toi\b", r"\bmeu canal\b", r"\binscreva-se\b", r"\bse inscreva\b",
    r"\b(?:mere|mera|meri|apna|hamare)\s+channel\b", r"\bchannel (?:ko|pe|par) (?:bhi )?(?:subscribe|aao|dekh)",
    r"мой канал", r"\bмоем канале\b", r"подпи(?:шись|шитесь|сывайтесь)", r"我的频道", r"订阅我", r"关注我",
    r"\bil mio canale\b", r"\biscriviti\b", r"\bchannel saya\b", r"قناتي", r"kanalıma",
)

_MONEY = _rx(
    r"\b(?:forex|binary options|crypto signals|trading signals|daily returns|passive income|account manager|"
    r"investment (?:manager|program|platform|expert|plan))\b",
    r"\b\d{1,3}% (?:daily|weekly|every day|a day|per day)\b",
    r"\brecover(?:ed)? (?:my|your|their) (?:lost )?(?:funds|money|account|bitcoin|crypto)\b",
    r"\b(?:earn|make|making|made|earning|earned)\w*\s+(?:over\s+|up to\s+)?[$€£₹]\s?\d[\d,.]*k?\s*"
    r"(?:a|per|every|each)?\s*(?:day|week|month|daily|weekly)\b",
    r"\b(?:gana|ganar|ganhe|ganhar|gagnez|gagner|verdiene|verdienen|guadagna)\b[^.!?\n]{0,30}"
    r"(?:dinero|dinheiro|argent|geld|soldi|\d)",
    r"\b(?:paise|paisa|paisa) kama", r"\bghar baithe\b", r"заработ\w*", r"赚钱", r"\bfree (?:robux|v-?bucks|gift cards?)\b",
)

# Comments with no letter or digit: the emoji decide (the embedder sees them all as the same [UNK]).
_PRAISE_EMOJI = set("❤♥💖💕💗💓💞💙💚💛💜🧡🤍🖤😍🥰😘🔥👍👏🙏🙌💯✨⭐🌟😊☺🤩👌✅🎉🥇🏆💪😀😃😄🤗💝🫶")
_SCORN_EMOJI = set("👎🤮🤢💩😡😠🙄😴🥱")


def emoji_intent(raw: str) -> str | None:
    """For a comment without a letter or digit: thanks (praise emoji), criticism (scorn), else other."""
    if re.search(r"[^\W_]", raw):
        return None
    chars = {ch for ch in raw if not ch.isspace()}
    if chars & _SCORN_EMOJI:
        return "criticism"
    if chars & _PRAISE_EMOJI:
        return "thanks"
    return "other"


RULES: tuple[Rule, ...] = (
    Rule("role_tag", "instructions", "screened: the comment contains chat-template control tags", _ROLE_TAG),
    Rule("override", "instructions", "screened: the comment tells the bot to drop its instructions", _OVERRIDE),
    Rule("reply_only", "instructions", "screened: the comment dictates what the reply must say", _REPLY_ONLY),
    Rule("persona", "instructions", "screened: the comment tries to give the bot a new role", _PERSONA),
    Rule("repeat", "instructions", "screened: the comment asks the bot to repeat its words", _REPEAT),
    Rule("address_bot", "instructions", "screened: the comment gives orders to the reply bot", _ADDRESS),
    Rule("wallet", "spam", "screened: the comment contains a crypto wallet address", _wallet),
    Rule("phone", "spam", "screened: the comment contains a phone number", _phone),
    Rule("contact", "spam", "screened: the comment asks readers to contact someone on a messenger", _CONTACT),
    Rule("shortener", "spam", "screened: the comment contains a short or invite link", _SHORTENER),
    Rule("self_promo", "spam", "screened: the comment promotes another channel or profile", _SELF_PROMO),
    Rule("money", "spam", "screened: the comment advertises money-making or investment schemes", _MONEY),
    Rule("link_drop", "spam", "screened: the comment is a link with little else", _link_drop),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}


def match_rule(text: str) -> Rule | None:
    """The first rule that matches `text`, or None."""
    norm = normalise(text)
    for rule in RULES:
        if rule.matches(norm, text):
            return rule
    return None
